"""`topofr cluster` (docs/method.md §7): exact k-NN and single-linkage forests against scipy, planted
clusters recovered, outliers kept apart, the FAR threshold by hand, and the CLI end to end
(`--write-folders` through `prepare folder`, one-line errors)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.cluster.hierarchy as hierarchy
import torch
from PIL import Image
from scipy.spatial.distance import pdist, squareform
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.clustering import neighbors as nb
from topofr_cli.clustering.methods import single_linkage
from topofr_cli.clustering.neighbors import neighbor_graph, unit_rows
from topofr_cli.clustering.run import cluster_embeddings
from topofr_cli.clustering.thresholds import threshold_at_far
from topofr_cli.data import open_dataset


def planted(seed=0, identities=12, per=8, dim=32, spread=0.05, outliers=5):
    """Unit vectors around `identities` random centres, plus `outliers` far from every centre."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(identities, dim)))
    x = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(identities * per, dim))
    lonely = unit_rows(rng.normal(size=(outliers, dim)))
    return np.vstack([x, lonely]).astype(np.float32), np.r_[
        np.repeat(np.arange(identities), per), -np.ones(outliers, int)
    ]


def same_partition(a, b) -> bool:
    """Equal up to renaming, each −1 counted as its own singleton."""

    def canonical(labels):
        labels = np.asarray(labels).copy()
        labels[labels < 0] = labels.max(initial=0) + 1 + np.arange((labels < 0).sum())
        _, first = np.unique(labels, return_index=True)
        order = {labels[i]: k for k, i in enumerate(sorted(first))}
        return [order[v] for v in labels]

    return canonical(a) == canonical(b)


@pytest.mark.parametrize("block_entries", [50**2, 2**25])
def test_nearest_neighbours_are_exact(block_entries):
    x = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    graph = neighbor_graph(x, 6, block_entries=block_entries)
    d = squareform(pdist(unit_rows(x).astype(np.float64), "cosine"))
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(graph.distances, np.sort(d, axis=1)[:, :6], atol=1e-5)
    chosen = np.take_along_axis(d, graph.indices, axis=1)
    np.testing.assert_allclose(chosen, graph.distances, atol=1e-5)


@pytest.mark.parametrize("threshold", [0.2, 0.25, 0.3])
def test_single_linkage_agrees_with_scipy_at_the_same_threshold(threshold, monkeypatch):
    monkeypatch.setattr(nb, "EDGE_BUDGET", 200)  # fold the forest many times across blocks
    x = np.random.default_rng(2).normal(size=(400, 10)).astype(np.float32)
    reference = hierarchy.fcluster(
        hierarchy.linkage(pdist(unit_rows(x), "cosine"), "single"), threshold, "distance"
    )
    assert 1 < len(np.unique(reference)) < 300  # neither all apart nor all together
    graph = neighbor_graph(x, 5, threshold=threshold, block_entries=64**2)  # 7 × 7 blocks
    assert same_partition(single_linkage(graph, min_size=1).labels, reference)
    whole = cluster_embeddings(x, method="single", threshold=threshold, min_size=1).labels
    assert same_partition(whole, reference)
    # the forest's lengths are single linkage's merge heights up to the threshold
    heights = hierarchy.linkage(pdist(unit_rows(x).astype(np.float64), "cosine"), "single")[:, 2]
    np.testing.assert_allclose(np.sort(graph.forest_lengths), heights[heights <= threshold], atol=1e-5)


@pytest.mark.parametrize("threshold", [0.3, 0.6])
def test_average_linkage_agrees_with_scipy_at_the_same_threshold(threshold):
    x = np.random.default_rng(3).normal(size=(300, 6)).astype(np.float32)
    ours = cluster_embeddings(x, method="average", threshold=threshold, min_size=1).labels
    tree = hierarchy.linkage(pdist(unit_rows(x).astype(np.float64), "cosine"), "average")
    assert same_partition(ours, hierarchy.fcluster(tree, threshold, "distance"))


@pytest.mark.parametrize("method", ["tomato", "single", "average"])
def test_planted_clusters_recovered_exactly_and_outliers_kept_apart(method):
    x, truth = planted()
    result = cluster_embeddings(x, method=method)
    assert same_partition(result.labels, truth)
    assert (result.labels[truth < 0] == -1).all()
    assert result.threshold_source == "H0 gap"
    clustered = result.labels >= 0
    assert (result.confidence[clustered] > 0).all() and (result.confidence[~clustered] == 0).all()
    members = np.flatnonzero(result.labels == 0)
    core = unit_rows(unit_rows(x)[members].sum(axis=0, keepdims=True))[0]
    np.testing.assert_allclose(result.distance_to_core[members], 1 - unit_rows(x)[members] @ core, atol=1e-5)


def test_tomato_splits_two_identities_joined_by_a_bridge_that_single_linkage_follows():
    rng = np.random.default_rng(5)
    a, b = np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    blobs = [c + 0.04 * rng.normal(size=(60, 3)) for c in (a, b)]
    bridge = np.linspace(a, b, 12)[1:-1]  # a thin chain of faces between the two
    x = np.vstack([*blobs, bridge]).astype(np.float32)
    threshold = 0.15
    single = cluster_embeddings(x, method="single", threshold=threshold).labels
    tomato = cluster_embeddings(x, threshold=threshold).labels
    assert len(np.unique(single[single >= 0])) == 1  # single linkage chains through the bridge
    assert tomato[0] != tomato[60] and len(np.unique(tomato[:120])) == 2


def test_forcing_the_number_of_clusters():
    x, _ = planted(outliers=0, identities=4)
    result = cluster_embeddings(x, threshold=1.99, clusters=2)
    assert len(np.unique(result.labels)) == 2


def test_threshold_at_far_by_hand():
    distances = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85])
    issame = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    # 6 impostors; FAR 1/3 allows 2 of them: the threshold sits just below the third (0.55)
    t = threshold_at_far(distances, issame, 1 / 3)
    assert 0.45 <= t.threshold < 0.55 and t.far == pytest.approx(2 / 6) and t.tar == pytest.approx(5 / 6)
    t = threshold_at_far(distances, issame, 0.1)  # none allowed: below the closest impostor
    assert t.threshold < 0.35 and t.far == 0 and t.tar == pytest.approx(3 / 6)


# ---------------------------------------------------------------- the CLI


def _face_folder(root, identities=4, per=3):
    rng = np.random.default_rng(0)
    for i in range(identities):
        (root / f"person{i}").mkdir(parents=True)
        for k in range(per):
            pixels = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"person{i}" / f"{k}.png")
    return open_dataset(root)


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_write_folders_round_trips_through_prepare_folder(tmp_path):
    dataset = _face_folder(tmp_path / "faces")
    centres = unit_rows(np.random.default_rng(1).normal(size=(4, 16)))
    emb = centres[dataset.labels] + 0.01 * np.random.default_rng(2).normal(size=(len(dataset), 16))
    np.save(tmp_path / "emb.npy", emb.astype(np.float32))
    out, folders = tmp_path / "report", tmp_path / "clusters"
    result = invoke(
        [
            "cluster",
            tmp_path / "faces",
            "--embeddings",
            tmp_path / "emb.npy",
            "--out",
            out,
            "--write-folders",
            folders,
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    with open(out / "clusters.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["source_key"] for r in rows] == [dataset.source_key(i) for i in range(len(dataset))]
    assert same_partition([int(r["cluster"]) for r in rows], dataset.labels)
    summary = json.loads((out / "cluster_summary.json").read_text())
    assert summary["clusters"] == 4 and summary["noise"] == 0
    assert (out / "cluster_persistence.png").is_file() and (out / "cluster_gallery.png").is_file()
    packed = invoke(["prepare", "folder", folders, tmp_path / "packed"])
    assert packed.exit_code == 0, packed.output
    repacked = open_dataset(tmp_path / "packed")
    assert sorted(np.bincount(repacked.labels)) == [3, 3, 3, 3]
    originals = {bytes(dataset.encoded(i)) for i in range(len(dataset))}
    assert {bytes(repacked.encoded(i)) for i in range(len(repacked))} == originals
    # the same folders again: refused without --overwrite, nothing changed
    again = invoke(
        [
            "cluster",
            tmp_path / "faces",
            "--embeddings",
            tmp_path / "emb.npy",
            "--out",
            tmp_path / "r2",
            "--write-folders",
            folders,
        ]
    )
    assert again.exit_code == 2 and "already exists" in again.output


def test_cluster_with_a_model_embeds_the_folder(calibrated_backbone, tmp_path):
    dataset = _face_folder(tmp_path / "faces", identities=3)
    torch.save(calibrated_backbone("mbf", 16, 0).state_dict(), tmp_path / "m.pth")
    result = invoke(
        [
            "cluster",
            tmp_path / "faces",
            "--model",
            tmp_path / "m.pth",
            "--out",
            tmp_path / "r",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--threshold",
            "0.5",
            "--method",
            "single",
        ]
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "r" / "clusters.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(dataset)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--embeddings", "missing.npy"], "missing.npy: embeddings file not found"),
        (
            ["--embeddings", "emb.npy", "--method", "single", "--clusters", "3"],
            "--clusters applies to --method tomato",
        ),
        (
            ["--embeddings", "emb.npy", "--method", "ward"],
            "--method ward: expected one of tomato, single, average",
        ),
        (["--embeddings", "bad.npy"], "bad.npy: expected embeddings [N ≥ 3, E]"),
        (["--embeddings", "emb.npy", "--far", "1e-3"], "--far needs --bin FILE and --model MODEL"),
        ([], "give INPUT with --model MODEL, or --embeddings FILE"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    np.save(tmp_path / "bad.npy", np.zeros(5, dtype=np.float32))
    result = invoke(["cluster", *args, "--out", tmp_path / "out"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out").exists()


def test_write_folders_never_inside_the_input(tmp_path):
    dataset = _face_folder(tmp_path / "faces", identities=2)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(len(dataset), 4)).astype(np.float32))
    result = invoke(
        [
            "cluster",
            tmp_path / "faces",
            "--embeddings",
            tmp_path / "emb.npy",
            "--out",
            tmp_path / "r",
            "--write-folders",
            tmp_path / "faces" / "clusters",
        ]
    )
    assert (
        result.exit_code == 2
        and "lies inside" in result.output
        and "which this command reads" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "faces" / "clusters").exists() and not (tmp_path / "r").exists()


def test_threshold_at_a_far_measured_on_a_bin(calibrated_backbone, tmp_path):
    import io

    from topofr_cli.data.bins import write_bin

    _face_folder(tmp_path / "faces", identities=2)
    torch.save(calibrated_backbone("mbf", 16, 0).state_dict(), tmp_path / "m.pth")
    rng = np.random.default_rng(3)
    images = []
    for _ in range(40):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    write_bin(tmp_path / "pairs.bin", images, [True, False] * 10)
    result = invoke(
        [
            "cluster",
            tmp_path / "faces",
            "--model",
            tmp_path / "m.pth",
            "--far",
            "0.2",
            "--bin",
            tmp_path / "pairs.bin",
            "--out",
            tmp_path / "r",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "cluster_summary.json").read_text())
    assert summary["threshold_source"] == "FAR 0.2 on pairs.bin"
    assert summary["far"]["impostor_pairs"] == 10 and summary["far"]["far"] <= 0.2
