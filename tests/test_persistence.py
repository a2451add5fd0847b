"""h0_pairs against gudhi's 0-dim Vietoris–Rips persistence and a union-find spanning-tree check."""

from __future__ import annotations

import gudhi
import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.topology import death_times, h0_pairs


def gudhi_deaths(dist: np.ndarray) -> np.ndarray:
    """Finite 0-dim deaths of the Vietoris–Rips filtration of a full distance matrix, sorted."""
    rips = gudhi.RipsComplex(distance_matrix=dist.tolist(), max_edge_length=float("inf"))
    tree = rips.create_simplex_tree(max_dimension=1)
    pairs = tree.persistence(min_persistence=-1)  # -1 keeps zero-persistence pairs (duplicates)
    deaths = [death for dim, (_, death) in pairs if dim == 0 and np.isfinite(death)]
    return np.sort(np.asarray(deaths, dtype=np.float64))


def euclidean(points: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    pts = torch.tensor(points, dtype=torch.float64)
    diff = pts[:, None, :] - pts[None, :, :]
    return diff.pow(2).sum(-1).sqrt().to(dtype)


def is_spanning_tree(pairs: np.ndarray, n: int) -> bool:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri == rj:
            return False
        parent[ri] = rj
    return len(pairs) == n - 1


def point_clouds(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        n = int(rng.integers(2, 48))
        kind = k % 3
        if kind == 0:
            yield rng.normal(size=(n, int(rng.integers(1, 6))))
        elif kind == 1:  # integer grid: many tied distances and duplicate points
            yield rng.integers(0, 3, size=(n, 2)).astype(np.float64)
        else:  # a few distinct points repeated: many zero-length deaths
            base = rng.normal(size=(max(1, n // 4), 3))
            yield base[rng.integers(0, len(base), size=n)]


@pytest.mark.parametrize(
    "dtype, fixed_rounds", [(torch.float64, None), (torch.float32, None), (torch.float32, True)]
)
def test_deaths_equal_gudhi_including_ties_and_duplicates(dtype, fixed_rounds):
    # fixed_rounds=True is the accelerator path: the full ceil(log2 n) budget, no early stop.
    for points in point_clouds(60, seed=1 if dtype == torch.float64 else 2):
        dist = euclidean(points, dtype)
        pairs = h0_pairs(dist, fixed_rounds=fixed_rounds)
        n = len(points)
        assert pairs.shape == (n - 1, 2) and pairs.dtype == torch.long
        assert bool((pairs[:, 0] < pairs[:, 1]).all())
        ours = death_times(dist, pairs).double().numpy()
        assert np.all(np.diff(ours) >= 0), "edges must come in non-decreasing length"
        np.testing.assert_array_equal(ours, gudhi_deaths(dist.double().numpy()))
        assert is_spanning_tree(pairs.numpy(), n)


def test_ties_are_ordered_by_edge_index():
    # Four corners of a unit square: four edges of length 1, the tree takes the three smallest indices.
    dist = euclidean(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float))
    pairs = h0_pairs(dist).tolist()
    assert pairs == [[0, 1], [0, 2], [1, 3]]


def test_all_points_identical():
    dist = torch.zeros(5, 5)
    pairs = h0_pairs(dist)
    assert is_spanning_tree(pairs.numpy(), 5)
    assert death_times(dist, pairs).tolist() == [0.0] * 4


def test_batch_matches_single():
    rng = np.random.default_rng(3)
    mats = [euclidean(rng.integers(0, 4, size=(17, 2)).astype(float), torch.float32) for _ in range(4)]
    batch = torch.stack(mats)
    pairs = h0_pairs(batch)
    assert pairs.shape == (4, 16, 2)
    for k, mat in enumerate(mats):
        assert torch.equal(pairs[k], h0_pairs(mat))
        np.testing.assert_array_equal(
            death_times(batch, pairs)[k].numpy(), death_times(mat, pairs[k]).numpy()
        )


def test_small_sizes():
    assert h0_pairs(torch.zeros(1, 1)).shape == (0, 2)
    assert h0_pairs(torch.zeros(0, 0)).shape == (0, 2)
    assert h0_pairs(torch.zeros(3, 1, 1)).shape == (3, 0, 2)
    two = torch.tensor([[0.0, 2.5], [2.5, 0.0]])
    assert h0_pairs(two).tolist() == [[0, 1]]


def test_validate_false_gives_same_result():
    dist = euclidean(np.random.default_rng(4).normal(size=(30, 3)))
    assert torch.equal(h0_pairs(dist, validate=False), h0_pairs(dist))


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]]), "NaN/inf"),
        (torch.tensor([[0.0, float("inf")], [float("inf"), 0.0]]), "NaN/inf"),
        (torch.tensor([[0.0, 1.0], [2.0, 0.0]]), "not symmetric"),
        (torch.zeros(2, 3), "square"),
        (torch.zeros(2, 2, 2, 2), "square"),
        (torch.zeros(3, 3, dtype=torch.long), "floating-point"),
        (torch.tensor([[0.0, -1.0], [-1.0, 0.0]]), "negative"),
    ],
)
def test_bad_inputs_raise_one_line_errors(bad, fragment):
    with pytest.raises(TopofrError) as info:
        h0_pairs(bad)
    message = str(info.value)
    assert fragment in message and "distance matrix" in message and "\n" not in message


def test_half_precision_input_matches_float32():
    dist = euclidean(np.random.default_rng(5).integers(0, 5, size=(25, 2)).astype(float), torch.float16)
    assert torch.equal(h0_pairs(dist), h0_pairs(dist.float()))


def test_rejects_entries_at_the_dtype_maximum():
    top = torch.finfo(torch.float32).max
    with pytest.raises(TopofrError, match="below"):
        h0_pairs(torch.tensor([[0.0, top], [top, 0.0]]))


def test_hot_path_never_reads_device_data():
    # The meta device has shapes but no data: any .item(), bool(tensor) or nonzero() — a host–device
    # synchronisation on CUDA — raises there. So running on it proves the path is sync-free.
    dist = torch.empty(2, 40, 40, device="meta")
    assert h0_pairs(dist, validate=False).shape == (2, 39, 2)
    assert h0_pairs(dist[0], validate=False).device.type == "meta"


def test_errors_name_the_tensor():
    with pytest.raises(TopofrError, match="^A\\^Z: "):
        h0_pairs(torch.tensor([[0.0, float("nan")], [float("nan"), 0.0]]), name="A^Z")
