"""Persistence diagrams, diagram distances, sampling, space comparison and the topology figures,
checked against gudhi called directly, topology.ptsa_loss, and hand-computed values."""

from __future__ import annotations

import gudhi
import gudhi.hera
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from topofr_cli.analysis.sampling import draw_sample
from topofr_cli.analysis.spaces import (
    compare_spaces,
    parse_dims,
    shared_edge_fraction,
    space_topologies,
)
from topofr_cli.errors import TopofrError
from topofr_cli.plots.pca import pca_from_distances, pca_from_points
from topofr_cli.topology import latent_distances, ptsa_loss
from topofr_cli.topology.diagrams import (
    diagram_distances,
    enclosing_radius,
    h0_diagram,
    h1_diagram,
)


def gudhi_reference(matrix: np.ndarray) -> dict[int, np.ndarray]:
    """Finite intervals per dimension from a plain Rips complex: no collapse, no threshold."""
    tree = gudhi.RipsComplex(distance_matrix=matrix).create_simplex_tree(max_dimension=2)
    tree.persistence()
    out = {}
    for dim in (0, 1):
        pairs = np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
        pairs = pairs[np.isfinite(pairs[:, 1])]
        out[dim] = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return out


def noisy_circles(n: int, seed: int) -> torch.Tensor:
    """Two noisy circles in 3-D (several long-lived H1 classes) plus scattered points."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    centre = np.where(rng.random(n) < 0.5, 0.0, 3.0)
    points = np.stack([np.cos(angle) + centre, np.sin(angle), 0.1 * rng.normal(size=n)], axis=1)
    points += 0.05 * rng.normal(size=points.shape)
    return torch.from_numpy(points).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_h0_and_h1_equal_plain_gudhi_rips(seed):
    points = (
        noisy_circles(60, seed)
        if seed < 2
        else torch.randn(50, 8, generator=torch.Generator().manual_seed(9))
    )
    dist = latent_distances(points)
    reference = gudhi_reference(dist.double().numpy())
    h0 = h0_diagram(dist)
    h1 = h1_diagram(dist)
    assert h0.shape == (len(points) - 1, 2)
    np.testing.assert_array_equal(np.sort(h0[:, 1]), np.sort(reference[0][:, 1]))
    assert (h0[:, 0] == 0).all()
    assert len(reference[1]) > 0
    np.testing.assert_array_equal(h1, reference[1])


def test_h1_with_tied_distances_equals_gudhi():
    # A 5 × 5 integer grid: many exactly equal edge lengths, square holes that die at √2.
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)
    matrix = cdist(grid, grid)
    np.testing.assert_array_equal(h1_diagram(matrix), gudhi_reference(matrix)[1])
    np.testing.assert_array_equal(np.sort(h0_diagram(matrix)[:, 1]), np.ones(24))


def test_enclosing_radius_and_tiny_inputs():
    matrix = np.array([[0, 1, 4], [1, 0, 2], [4, 2, 0]], dtype=float)
    assert enclosing_radius(matrix) == 2.0  # vertex 1 reaches every other vertex within 2
    assert h1_diagram(matrix[:2, :2]).shape == (0, 2)
    np.testing.assert_array_equal(h0_diagram(matrix), [[0, 1], [0, 2]])


def test_bad_matrices_are_one_line_errors():
    with pytest.raises(TopofrError, match="square"):
        h1_diagram(np.zeros((3, 4)))
    with pytest.raises(TopofrError, match="NaN"):
        h1_diagram(np.array([[0, np.nan], [np.nan, 0]]))
    with pytest.raises(TopofrError, match="symmetric"):
        h0_diagram(np.array([[0.0, 1.0], [2.0, 0.0]]))


def test_distances_match_gudhi_functions():
    rng = np.random.default_rng(3)
    a = np.sort(rng.random((40, 2)), axis=1)
    b = np.sort(rng.random((33, 2)) * 1.2, axis=1)
    got = diagram_distances(a, b, wasserstein_delta=1e-6)
    assert got.bottleneck == pytest.approx(gudhi.bottleneck_distance(a, b), rel=1e-12)
    for p, value in ((1, got.wasserstein_1), (2, got.wasserstein_2)):
        expected = gudhi.hera.wasserstein_distance(a, b, order=p, internal_p=np.inf, delta=1e-6)
        assert value == pytest.approx(expected, rel=1e-9)
    # Hand value: one point (0, 2) against an empty diagram goes to the diagonal at L∞ cost 1.
    single = diagram_distances(np.array([[0.0, 2.0]]), np.zeros((0, 2)))
    assert single.bottleneck == pytest.approx(1.0)
    assert single.wasserstein_1 == pytest.approx(1.0)
    assert diagram_distances(a, a).wasserstein_2 == 0.0


def test_diagonal_points_cost_nothing_and_do_not_crash():
    """A collapsed model's H0 diagram is all (0, 0): hera segfaults on it unless it is left out."""
    single = diagram_distances(np.array([[0.0, 2.0]]), np.zeros((7, 2)))
    assert (single.bottleneck, single.wasserstein_1, single.wasserstein_2) == (1.0, 1.0, 1.0)
    assert diagram_distances(np.zeros((3, 2)), np.zeros((4, 2))).wasserstein_1 == 0.0


def test_dropping_the_essential_h0_class_changes_no_distance():
    dist_a = latent_distances(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)))
    dist_b = latent_distances(torch.randn(30, 4, generator=torch.Generator().manual_seed(1)) * 2)
    a, b = h0_diagram(dist_a), h0_diagram(dist_b)
    essential = np.array([[0.0, np.inf]])
    with_a, with_b = np.vstack([a, essential]), np.vstack([b, essential])
    ours = diagram_distances(a, b)
    assert ours.bottleneck == pytest.approx(gudhi.bottleneck_distance(with_a, with_b))
    expected_w1 = gudhi.hera.wasserstein_distance(with_a, with_b, order=1, internal_p=np.inf, delta=1e-4)
    assert ours.wasserstein_1 == pytest.approx(expected_w1, rel=1e-3)
    with pytest.raises(TopofrError, match="non-finite"):
        diagram_distances(with_a, b)


def test_draw_sample_is_reproducible_and_groups_identities():
    labels = np.repeat(np.arange(30), [3 if i % 3 == 0 else 6 for i in range(30)])
    first = draw_sample(labels, 40, seed=5)
    assert np.array_equal(first, draw_sample(labels, 40, seed=5))
    assert not np.array_equal(first, draw_sample(labels, 40, seed=6))
    assert len(np.unique(first)) == 40 and np.all(np.diff(first) > 0)
    grouped = draw_sample(labels, 22, per_identity=5, seed=1)
    counts = np.bincount(labels[grouped], minlength=30)
    assert len(grouped) == 22 and len(np.unique(grouped)) == 22
    assert sorted(counts[counts > 0].tolist()) == [2, 5, 5, 5, 5]  # the last identity drawn gives 2
    assert np.all(counts[::3] == 0)  # identities with only 3 images are never drawn for K = 5
    with pytest.raises(TopofrError, match="fewer than the 500 samples"):
        draw_sample(labels, 500, source="tiny")
    with pytest.raises(TopofrError, match="identities have at least 6"):
        draw_sample(labels, 130, per_identity=6, source="tiny")


def test_parse_dims():
    assert parse_dims("1,0") == (0, 1)
    assert parse_dims("0") == (0,)
    for bad in ("2", "a", ""):
        with pytest.raises(TopofrError, match="--dims"):
            parse_dims(bad)


def test_comparison_matches_ptsa_loss_and_hand_counts():
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(24, 3, 8, 8, generator=generator) * 2 - 1
    z = torch.randn(24, 6, generator=generator)
    from topofr_cli.topology import input_distances

    spaces = space_topologies({"input": input_distances(x), "latent": latent_distances(z, 0.5)}, (0, 1))
    comparison = compare_spaces(spaces["input"], spaces["latent"])
    for form, value in (("official", comparison.ptsa_official), ("symmetric", comparison.ptsa_symmetric)):
        assert value == pytest.approx(float(ptsa_loss(x, z, form=form, latent_scale=0.5)), rel=1e-5)
    for dim in (0, 1):
        expected = gudhi.bottleneck_distance(spaces["input"].diagrams[dim], spaces["latent"].diagrams[dim])
        assert comparison.distances[dim].bottleneck == pytest.approx(expected)
    same = compare_spaces(spaces["latent"], spaces["latent"])
    assert same.shared_h0_fraction == 1.0 and same.ptsa_official == 0.0
    assert same.distances[1].wasserstein_1 == 0.0
    # Two trees on 4 vertices sharing exactly the edge (0, 1): 1 of 3 pairs in common.
    tree_a = torch.tensor([[0, 1], [1, 2], [2, 3]])
    tree_b = torch.tensor([[0, 1], [0, 3], [1, 3]])
    assert shared_edge_fraction(tree_a, tree_b, 4) == pytest.approx(1 / 3)


def test_pca_views_agree_with_numpy_svd():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 20)) * np.linspace(4, 0.2, 20)
    centred = points - points.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ axes[:2].T
    for projected, share in (pca_from_points(points), pca_from_distances(cdist(points, points))):
        np.testing.assert_allclose(np.abs(projected), np.abs(expected), atol=1e-8)
        np.testing.assert_allclose(share, singular[:2] ** 2 / (singular**2).sum(), rtol=1e-10)
