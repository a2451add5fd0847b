"""Every figure: what can be checked without looking — scales, labels, titles, legends, what is
drawn, the files written and their pixel size — plus the numbers the figures are drawn from, against
hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection
from PIL import Image

from topofr_cli.analysis.spaces import space_topologies
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.degeneracy import embedding_degeneracy
from topofr_cli.hardness.ranking import GumFit, HardnessTable
from topofr_cli.plots.collapse import draw_collapse_curves, plot_collapse_curves
from topofr_cli.plots.diagrams import (
    MAX_BARS,
    draw_barcodes,
    draw_death_histograms,
    draw_persistence_diagrams,
    normalise,
    plot_persistence_diagrams,
)
from topofr_cli.plots.hardness import draw_distributions, draw_gallery, plot_gallery
from topofr_cli.plots.pca import draw_sample_pca, pca_from_points
from topofr_cli.plots.roc import RocCurve, draw_roc, exact_verification_roc, plot_roc, tar_at_far_on_curve
from topofr_cli.plots.style import MAX_PIXELS, FigureMeta, model_label, save_figure
from topofr_cli.topology import latent_distances

META = FigureMeta(model="quickstart", step=92, dataset="synthetic", n=512, seed=0)


def _texts(figure) -> str:
    parts = [figure.get_suptitle()] if figure._suptitle is not None else []
    for axes in figure.axes:
        parts += [axes.get_title(), axes.get_xlabel(), axes.get_ylabel()]
        parts += [t.get_text() for t in axes.texts]
        legend = axes.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()]
    for legend in figure.legends:
        parts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(parts)


def _visible_axes(figure):
    return [axes for axes in figure.axes if axes.axison]


def _assert_bounded_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert max(image.size) <= MAX_PIXELS and min(image.size) > 300, image.size


def test_meta_titles_and_file_names():
    assert META.title("ROC") == "ROC — quickstart, step 92\nsynthetic, 512 samples, seed 0"
    assert META.file_stem("barcodes") == "quickstart_step00000092_barcodes"
    assert FigureMeta().title("ROC") == "ROC" and FigureMeta().file_stem("x") == "x"
    assert model_label("runs/a/checkpoints/step_00000092.pt") == "a"
    assert model_label("model.onnx") == "model"


def test_every_format_is_written_and_a_bad_one_refused(tmp_path):
    figure = draw_roc(
        [RocCurve("a", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]), 2, 0.9)], META, "ROC"
    )
    assert save_figure(figure, tmp_path / "f", "pdf").read_bytes()[:5] == b"%PDF-"
    svg = save_figure(figure, tmp_path / "f", "svg").read_text()
    assert "<svg" in svg and "quickstart, step 92" in svg  # text stays text
    _assert_bounded_png(save_figure(figure, tmp_path / "f.png"))
    with pytest.raises(TopofrError, match="--figure-format jpg"):
        save_figure(figure, tmp_path / "f", "jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "f.svg"]  # no temporaries left


def test_exact_roc_from_sorted_distances():
    # Accepted below a threshold: same pairs at 0.1, 0.3, 0.7; different pairs at 0.2, 0.5, 0.9, 1.2.
    distances = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.2])
    issame = np.array([True, False, True, False, True, False, False])
    fpr, tpr = exact_verification_roc(distances, issame)
    # Every distinct distance is a threshold (sklearn drops the collinear ones): hand-walked corners.
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    corners = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert {(0.0, 1 / 3), (0.25, 1 / 3), (0.25, 2 / 3), (0.5, 2 / 3), (0.5, 1.0)} <= corners
    assert tar_at_far_on_curve(fpr, tpr, 0.25) == pytest.approx(2 / 3)
    assert tar_at_far_on_curve(fpr, tpr, 0.1) == pytest.approx(1 / 3)


def test_roc_figure(tmp_path):
    rng = np.random.default_rng(0)
    issame = np.arange(40_000) % 2 == 0
    distances = np.where(issame, rng.normal(0.6, 0.2, issame.size), rng.normal(1.6, 0.2, issame.size))
    big = RocCurve(
        "lfw",
        *exact_verification_roc(distances, issame),
        negatives=20_000,
        auc=0.99,
        accuracy=(0.9912, 0.0031),
    )
    small = RocCurve("tiny", *exact_verification_roc(distances[:300], issame[:300]), negatives=150, auc=0.98)
    figure = draw_roc([big, small], META, "verification ROC")
    (axes,) = figure.axes
    assert axes.get_xscale() == "log" and "FAR" in axes.get_xlabel() and "TAR" in axes.get_ylabel()
    assert axes.get_xlim()[0] < 1e-4  # the 1e-4 operating point is on the axis
    text = _texts(figure)
    assert "step 92" in axes.get_title() and "quickstart" in axes.get_title()
    assert "acc 99.12 ± 0.31 %" in text and "AUC 0.9900" in text
    assert "TAR@FAR=1e-04" in text and "TAR@FAR=1e-03" in text  # 20 000 impostors: both measurable
    assert "TAR@FAR=1e-04, 1e-03: not measurable (150 impostor pairs)" in text  # 150 impostors: neither
    # The exact curve has one corner per distinct distance, far more than the 400-threshold grid.
    assert len(axes.lines[0].get_xdata()) > 400
    _assert_bounded_png(plot_roc([big], META, tmp_path / "roc.png"))


def _views():
    gen = torch.Generator().manual_seed(0)
    points = {
        "input": torch.randn(60, 8, generator=gen) * 0.01,
        "latent": torch.randn(60, 4, generator=gen) * 30,
    }
    points["latent_l2"] = torch.nn.functional.normalize(points["latent"], dim=1)
    topologies = space_topologies({k: latent_distances(v) for k, v in points.items()}, (0, 1))
    return {k: t.diagrams for k, t in topologies.items()}


def test_normalisation_puts_every_space_on_one_scale():
    views = _views()
    scaled, scales = normalise(views)
    for space, by_dim in scaled.items():
        assert by_dim[0][:, 1].max() == pytest.approx(1.0)
        assert scales[space] == pytest.approx(views[space][0][:, 1].max())
        np.testing.assert_allclose(by_dim[1] * scales[space], views[space][1])
    assert scales["latent"] / scales["input"] > 100  # the raw scales really are incomparable


def test_persistence_diagram_figure(tmp_path):
    figure = draw_persistence_diagrams(_views(), META)
    scatter_row, histogram_row = figure.axes[:3], figure.axes[3:]
    assert len(figure.axes) == 6
    titles = [axes.get_title() for axes in scatter_row]
    assert "input space" in titles[0] and "÷ λ" in titles[1] and "L2-normalised" in titles[2]
    assert all("largest H0 death =" in t for t in titles)
    for axes in figure.axes:
        assert "largest H0 death" in axes.get_xlabel() and axes.get_ylabel()
    # Panels that are compared share their axes.
    assert scatter_row[0].get_shared_y_axes().joined(scatter_row[0], scatter_row[2])
    assert histogram_row[0].get_shared_x_axes().joined(histogram_row[0], histogram_row[1])
    # H0 is a histogram, never a scatter of points on the birth = 0 line.
    for axes in scatter_row:
        for collection in axes.collections:
            assert (collection.get_offsets()[:, 0] > 0).all()
    assert all(len(axes.patches) == 40 for axes in histogram_row)
    assert "step 92" in figure.get_suptitle() and "seed 0" in figure.get_suptitle()
    path = plot_persistence_diagrams(_views(), META, tmp_path / META.file_stem("persistence_diagrams"))
    assert path.name == "quickstart_step00000092_persistence_diagrams.png"
    _assert_bounded_png(path)


def test_barcodes_and_death_histograms():
    views = _views()
    figure = draw_barcodes(views, META, max_bars=20)
    assert MAX_BARS >= 20
    grid = np.array(figure.axes).reshape(3, 2)
    for axes in grid.flat:
        (bars,) = [c for c in axes.collections if isinstance(c, LineCollection)]
        assert len(bars.get_segments()) == 20
        assert "20 longest of" in axes.get_title()
    assert grid[0, 0].get_shared_x_axes().joined(grid[0, 0], grid[2, 0])
    assert grid[2, 1].get_xlabel() and "step 92" in figure.get_suptitle()
    histograms = draw_death_histograms(views, META)
    assert len(histograms.axes) == 6 and "step 92" in histograms.get_suptitle()


def test_pca_colours_the_largest_identities_and_greys_the_rest():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.repeat(np.arange(64), 8), np.full(5, 7)])  # identity 7 is the largest
    projected, share = pca_from_points(rng.normal(size=(len(labels), 6)))
    figure = draw_sample_pca(projected, share, labels, META, "latent PCA", coloured=8)
    (axes,) = figure.axes
    entries = [t.get_text() for t in axes.get_legend().get_texts()]
    assert entries[0] == "56 other identities" and entries[1] == "identity 7 (13)" and len(entries) == 9
    grey = axes.collections[0]
    assert len(grey.get_offsets()) == len(labels) - 13 - 7 * 8
    assert "64 identities" in axes.get_title() and "PC1" in axes.get_xlabel()


def _rows(accuracy: bool = True, step0: bool = True):
    steps = (0, 10, 20) if step0 else (10, 20)
    return [
        {
            "run": run,
            "step": step,
            "space": space,
            "dim": dim,
            "bottleneck": 1.0 + step,
            "wasserstein_1": 2.0,
            "wasserstein_2": 1.5,
            "ptsa_official": 0.1,
            "ptsa_symmetric": 0.2,
            "shared_h0_fraction": 0.3,
            "mean_cosine": 0.95 if (run, step) == ("b", 20) else 0.1,
            "degenerate": (run, step) == ("b", 20),
            "accuracy": 0.8 if accuracy else None,
            "accuracy_std": 0.02 if accuracy else None,
        }
        for run in ("a", "b")
        for step in steps
        for space in ("latent", "latent_l2")
        for dim in (0, 1)
    ]


def test_collapse_curve_figure(tmp_path):
    figure = draw_collapse_curves(_rows(), FigureMeta(dataset="synthetic", n=512, seed=0), space="latent_l2")
    visible = _visible_axes(figure)
    assert len(visible) == 3 * 3 + 2  # 2 dims × 3 distances, 3 PTSA panels, accuracy and mean cosine
    for axes in visible:
        assert axes.get_ylabel() and axes.get_title()
        assert axes.get_legend() is None  # one legend, for the whole figure
    (legend,) = figure.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[:2] == ["a", "b"] and "step 0 (initial model)" in entries
    assert any("degenerate" in e for e in entries)
    accuracy = next(a for a in visible if "accuracy" in a.get_title())
    assert accuracy.lines[0].get_ydata().tolist() == [80.0, 80.0, 80.0]
    # Step 0 is a square; the degenerate checkpoint (run b, step 20) is ringed on every panel.
    first = visible[0]
    squares = [line for line in first.lines if line.get_marker() == "s" and len(line.get_xdata())]
    assert [line.get_xdata().tolist() for line in squares] == [[0], [0]]
    rings = [line for line in first.lines if line.get_markerfacecolor() == "none" and len(line.get_xdata())]
    assert [line.get_xdata().tolist() for line in rings] == [[20]]
    assert "L2-normalised" in figure.get_suptitle() and "seed 0" in figure.get_suptitle()
    without = draw_collapse_curves(_rows(accuracy=False, step0=False), FigureMeta(), space="latent")
    assert "no held-out .bin" in _texts(without) and "step 0 (initial model)" not in _texts(without)
    _assert_bounded_png(plot_collapse_curves(_rows(), FigureMeta(), tmp_path / "c", space="latent"))


def test_embedding_degeneracy_matches_hand_values():
    assert embedding_degeneracy(np.eye(4)) == (0.0, False)
    mean, flag = embedding_degeneracy(np.ones((5, 3)) * 7)
    assert mean == pytest.approx(1.0) and flag
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)) + 2.0
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cosine = unit @ unit.T
    expected = (cosine.sum() - np.trace(cosine)) / (50 * 49)
    assert embedding_degeneracy(emb)[0] == pytest.approx(expected, rel=1e-12)
    assert embedding_degeneracy(emb, threshold=expected - 1e-3)[1]
    with pytest.raises(ValueError):
        embedding_degeneracy(np.ones((1, 3)))


class _Images:
    def __init__(self, n):
        self.n = n

    def __getitem__(self, index):
        image = np.full((112, 112, 3), (index * 37) % 255, dtype=np.uint8)
        return image, index % 10

    def source_key(self, index):
        return f"person_{index % 10:03d}/img_{index:05d}.jpg"


def _table(n=400):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    p_true = rng.uniform(1e-6, 1.0, n).astype(np.float32)
    gamma = rng.uniform(0, 1, n)
    w1, w2 = 2.0 - gamma, 1.0 - p_true.astype(np.float64)
    predicted = np.where(rng.random(n) < 0.9, labels, (labels + 1) % 10)
    return HardnessTable(
        labels=labels,
        predicted=predicted,
        runner_up=(labels + 2) % 10,
        p_true=p_true,
        p_predicted=p_true,
        p_runner_up=p_true / 2,
        cosine_gap=rng.uniform(0, 0.5, n).astype(np.float32),
        entropy=rng.uniform(0, 3, n),
        gum_input=np.where(np.arange(n) % 2 == 0, -1.0, 1.0) + 0.2 * rng.normal(size=n),
        gamma=gamma,
        w1=w1,
        w2=w2,
        sds=w1 * w2,
        gum_scope="dataset",
        gum=GumFit(pi=0.5, sigma2=0.9, c=0.2, iterations=12),
    )


def test_sds_distributions_figure():
    table = _table()
    figure = draw_distributions(table, FigureMeta(model="q", step=92, n=400, n_label="images"), top=10)
    histogram, gum, scatter = figure.axes[:3]
    assert histogram.get_yscale() == "log" and scatter.get_xscale() == "log"
    assert histogram.yaxis.get_major_formatter()(100, 0) == "100"  # decades read as plain numbers
    text = _texts(figure)
    assert "π = 0.500 — at its cap" in text and "sign flipped at even positions" in gum.get_xlabel()
    assert "entropy negated (even positions)" in text and "p_gt" in scatter.get_xlabel()
    ringed = scatter.collections[1]
    np.testing.assert_allclose(ringed.get_offsets()[:, 1], np.sort(table.sds)[::-1][:10], rtol=1e-6)
    assert "step 92" in figure.get_suptitle()


def test_gallery_shows_source_keys_and_stays_bounded(tmp_path):
    table, dataset = _table(), _Images(400)
    figure = draw_gallery(table, dataset, FigureMeta(model="q", step=92), top=20, typical=3)
    images = [axes for axes in figure.axes if axes.images]
    assert len(images) == 20 * 7
    top = table.ranking()[0]
    first = next(axes.get_title() for axes in images if axes.get_title().startswith("#1 "))
    assert dataset.source_key(int(top))[-17:] in first and "SDS" in first and "idx" not in first
    path = plot_gallery(table, dataset, FigureMeta(model="q", step=92), tmp_path / "gallery", top=32)
    _assert_bounded_png(path)  # 32 rows of 7 images would be ~3500 px tall unbounded
