"""The structure collapse curve: input–latent diagram distances against training step, one line per run,
beside the held-out verification accuracy and the degeneracy of each checkpoint.

Rows are those of `topofr_cli.analysis.collapse.curve_rows`. Small topology distances alone do not
mean a good model: a model that maps every face to one direction has a trivial latent topology. So
the right-hand column shows what the model is worth (accuracy) and how spread out its embeddings are
(mean cosine between different images), and a checkpoint whose embeddings are degenerate is ringed
in red on every panel. The step-0 checkpoint (the initial model), when the run has one, is a square:
it is the reference the curve is read against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from topofr_cli.evaluation.degeneracy import DEGENERATE_MEAN_COSINE
from topofr_cli.plots.style import PALETTE, FigureMeta, new_figure, save_figure, styled

SPACE_UNITS = {
    "latent": "input ÷ √(4·3·H·W) vs latent ÷ λ",
    "latent_l2": "input ÷ √(4·3·H·W) vs L2-normalised latent",
}
SPACE_NAMES = {"latent": "latent space (embeddings ÷ λ)", "latent_l2": "L2-normalised latent space"}
DISTANCE_PANELS = (
    ("bottleneck", "bottleneck distance"),
    ("wasserstein_1", "Wasserstein distance, p = 1"),
    ("wasserstein_2", "Wasserstein distance, p = 2"),
)
PTSA_PANELS = (
    ("ptsa_official", "PTSA loss, official form", "loss ÷ n (squared distance)"),
    ("ptsa_symmetric", "PTSA loss, symmetric form", "loss ÷ n (squared distance)"),
    ("shared_h0_fraction", "H0 pairs shared with the input", "fraction of MST edges"),
)
FLAG_COLOR = "#d62728"


def _series(rows: Sequence[dict[str, Any]], run: str, space: str, dim: int, key: str):
    """(steps, values, degenerate) of one run, by step, skipping missing values."""
    points = sorted(
        (row["step"], row[key], bool(row.get("degenerate")))
        for row in rows
        if row["run"] == run
        and row["space"] == space
        and row["dim"] == dim
        and row["step"] is not None
        and row.get(key) is not None
        and not _isnan(row.get(key))
    )
    return (
        np.array([p[0] for p in points]),
        np.array([p[1] for p in points], dtype=np.float64),
        np.array([p[2] for p in points], dtype=bool),
    )


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _draw_runs(axes, rows, runs, space, dim, key, scale: float = 1.0, errors: str | None = None) -> None:
    for color, run in zip(PALETTE, runs, strict=False):
        steps, values, degenerate = _series(rows, run, space, dim, key)
        if not len(steps):
            continue
        values = values * scale
        axes.plot(steps, values, color=color, lw=1.5, marker="o", ms=4)
        if errors is not None:
            _, spread, _ = _series(rows, run, space, dim, errors)
            if len(spread) == len(values):
                axes.fill_between(
                    steps, values - scale * spread, values + scale * spread, color=color, alpha=0.15, lw=0
                )
        initial = steps == 0
        axes.plot(steps[initial], values[initial], "s", color=color, ms=7, mec="black", mew=0.8)
        axes.plot(steps[degenerate], values[degenerate], "o", ms=12, mfc="none", mec=FLAG_COLOR, mew=1.6)


def _legend_handles(runs: list[str], rows) -> list[Line2D]:
    handles = [
        Line2D([], [], color=color, lw=1.5, marker="o", ms=4, label=run)
        for color, run in zip(PALETTE, runs, strict=False)
    ]
    if any(row["step"] == 0 for row in rows):
        handles.append(
            Line2D(
                [], [], ls="", marker="s", ms=7, color="#cccccc", mec="black", label="step 0 (initial model)"
            )
        )
    handles.append(
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            ms=12,
            mfc="none",
            mec=FLAG_COLOR,
            mew=1.6,
            label=f"degenerate embedding (mean cos > {DEGENERATE_MEAN_COSINE})",
        )
    )
    return handles


@styled
def draw_collapse_curves(rows: Sequence[dict[str, Any]], meta: FigureMeta, *, space: str = "latent"):
    """Rows of panels: one per homology dimension (bottleneck, W1, W2), one with the PTSA loss forms
    and the shared-H0 fraction; a right-hand column with the held-out accuracy and the mean cosine."""
    rows = [row for row in rows if row["space"] == space]
    runs = list(dict.fromkeys(row["run"] for row in rows))
    dims = sorted({row["dim"] for row in rows}) or [0]
    grid_rows = len(dims) + 1
    figure = new_figure(15.0, 2.9 * grid_rows + 1.2)
    grid = figure.subplots(grid_rows, 4, squeeze=False, sharex=True)
    units = SPACE_UNITS.get(space, "diagram units")
    for r, dim in enumerate(dims):
        for c, (key, title) in enumerate(DISTANCE_PANELS):
            axes = grid[r][c]
            _draw_runs(axes, rows, runs, space, dim, key)
            axes.set_title(f"H{dim}: {title}")
            axes.set_ylabel("distance between diagrams")
    for c, (key, title, ylabel) in enumerate(PTSA_PANELS):
        axes = grid[-1][c]
        _draw_runs(axes, rows, runs, space, dims[0], key, scale=100.0 if key == "shared_h0_fraction" else 1.0)
        axes.set_title(title)
        axes.set_ylabel("% of MST edges" if key == "shared_h0_fraction" else ylabel)
    accuracy_axes, cosine_axes = grid[0][3], grid[1][3]
    held_out = [row for row in rows if row.get("accuracy") is not None]
    if held_out:
        _draw_runs(accuracy_axes, rows, runs, space, dims[0], "accuracy", scale=100.0, errors="accuracy_std")
        accuracy_axes.set_title("held-out verification accuracy (± std, 10 folds)")
        accuracy_axes.set_ylabel("accuracy (%)")
    else:
        accuracy_axes.text(
            0.5,
            0.5,
            "no held-out .bin in the dataset:\naccuracy not measured",
            ha="center",
            va="center",
            transform=accuracy_axes.transAxes,
        )
        accuracy_axes.set_title("held-out verification accuracy")
    _draw_runs(cosine_axes, rows, runs, space, dims[0], "mean_cosine")
    cosine_axes.axhline(DEGENERATE_MEAN_COSINE, color=FLAG_COLOR, ls="--", lw=1)
    cosine_axes.set_ylim(min(-0.05, cosine_axes.get_ylim()[0]), 1.05)
    cosine_axes.set_title("mean cosine between different images")
    cosine_axes.set_ylabel("cosine (1 = all embeddings alike)")
    for axes in grid[2:, 3]:
        axes.axis("off")
    for axes in grid.flat:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in [*grid[-1], cosine_axes]:
        axes.set_xlabel("training step")
        axes.xaxis.set_tick_params(labelbottom=True)
    figure.legend(handles=_legend_handles(runs, rows), loc="outside lower center", ncols=4, frameon=False)
    title = meta.title(f"structure collapse curve: input space vs {SPACE_NAMES.get(space, space)}")
    figure.suptitle(f"{title}\ndiagram distances in filtration units: {units}")
    return figure


def plot_collapse_curves(
    rows: Sequence[dict[str, Any]],
    meta: FigureMeta,
    path: Path,
    *,
    space: str = "latent",
    figure_format: str = "png",
) -> Path:
    return save_figure(draw_collapse_curves(rows, meta, space=space), path, figure_format)
