"""Figures for `topofr analyze-topology`: persistence diagrams, barcodes and death-time histograms.

`diagrams` arguments map a space name ("input", "latent", "latent_l2") to {dim: [k, 2] (birth, death)}
in that space's own units (`SPACE_UNITS`). Spaces differ in scale by orders of magnitude (pixels
÷ √(4·3·H·W), embeddings ÷ λ, unit vectors), so figures that put spaces side by side use one
normalisation: every value of a space is divided by that space's largest H0 death (its longest
minimum-spanning-tree edge). Panels then share their axes and compare shapes; each panel states its
divisor in native units, so the absolute scale is not lost.

H0 classes are all born at 0, so a birth–death scatter would stack them on one vertical line; H0 is
drawn as a histogram of death times instead, and H1 (and H2) as birth–death scatters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topofr_cli.plots.pca import pca_from_distances, pca_from_points, plot_sample_pca  # noqa: F401 (re-export)
from topofr_cli.plots.style import DIAGONAL, DIM_COLORS, FigureMeta, new_figure, save_figure, styled

SPACE_NAMES = {
    "input": "input space (pixels)",
    "latent": "latent space (embeddings ÷ λ)",
    "latent_l2": "latent space, L2-normalised",
}
SPACE_UNITS = {
    "input": "‖x_i − x_j‖ ÷ √(4·3·H·W)",
    "latent": "‖z_i − z_j‖ ÷ λ",
    "latent_l2": "‖ẑ_i − ẑ_j‖, ‖ẑ‖ = 1",
}
NORMALISED = "÷ largest H0 death of the space"
MAX_BARS = 60  # more bars than this merge into a filled area


def _name(space: str) -> str:
    return SPACE_NAMES.get(space, space)


def space_scale(by_dim: dict[int, np.ndarray]) -> float:
    """The divisor of a space: its largest H0 death, else its largest finite value, else 1."""
    h0 = by_dim.get(0)
    if h0 is not None and len(h0) and float(h0[:, 1].max()) > 0:
        return float(h0[:, 1].max())
    finite = [float(d.max()) for d in by_dim.values() if len(d)]
    top = max(finite, default=0.0)
    return top if top > 0 else 1.0


def normalise(
    diagrams: dict[str, dict[int, np.ndarray]],
) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, float]]:
    """Each space's diagrams divided by its `space_scale`, and the scales."""
    scales = {space: space_scale(by_dim) for space, by_dim in diagrams.items()}
    scaled = {
        space: {
            dim: np.asarray(d, dtype=np.float64).reshape(-1, 2) / scales[space] for dim, d in by_dim.items()
        }
        for space, by_dim in diagrams.items()
    }
    return scaled, scales


def _dims(diagrams: dict[str, dict[int, np.ndarray]]) -> list[int]:
    return sorted({dim for by_dim in diagrams.values() for dim in by_dim})


def _scale_note(space: str, scale: float) -> str:
    return f"largest H0 death = {scale:.3g} in {SPACE_UNITS.get(space, 'native units')}"


def _h0_histogram(axes, deaths: np.ndarray, bins: np.ndarray) -> None:
    axes.hist(deaths, bins=bins, color=DIM_COLORS[0], alpha=0.85)
    if len(deaths):
        axes.axvline(
            float(np.median(deaths)), color="black", lw=1, ls="--", label=f"median {np.median(deaths):.2f}"
        )
        axes.legend(loc="upper left")


@styled
def draw_persistence_diagrams(diagrams: dict[str, dict[int, np.ndarray]], meta: FigureMeta):
    """Columns = spaces. Top row: H1/H2 birth–death scatter; bottom row: H0 death histogram; all
    panels of a row share their axes (normalised as the module says)."""
    scaled, scales = normalise(diagrams)
    dims = _dims(scaled)
    higher = [d for d in dims if d > 0]
    rows = (["higher"] if higher else []) + (["h0"] if 0 in dims else [])
    columns = len(scaled)
    figure = new_figure(3.9 * columns + 0.4, 3.5 * len(rows) + 0.8)
    grid = figure.subplots(len(rows), columns, squeeze=False, sharex="row", sharey="row")
    top = max((float(d.max()) for by_dim in scaled.values() for d in by_dim.values() if len(d)), default=1.0)
    top = 1.05 * max(top, 1.0)
    bins = np.linspace(0.0, 1.0, 41)
    for col, (space, by_dim) in enumerate(scaled.items()):
        for row, kind in enumerate(rows):
            axes = grid[row][col]
            if kind == "higher":
                axes.plot([0, top], [0, top], color=DIAGONAL, lw=0.8)
                for dim in higher:
                    diagram = by_dim.get(dim, np.zeros((0, 2)))
                    axes.scatter(
                        diagram[:, 0],
                        diagram[:, 1],
                        s=12,
                        alpha=0.75,
                        color=DIM_COLORS.get(dim),
                        lw=0,
                        label=f"H{dim}: {len(diagram)} classes",
                    )
                axes.set_xlim(0, top)
                axes.set_ylim(0, top)
                axes.set_xlabel(f"birth ({NORMALISED})")
                axes.set_ylabel(f"death ({NORMALISED})")
                axes.legend(loc="lower right")
                axes.set_title(f"{_name(space)}\n{_scale_note(space, scales[space])}")
            else:
                deaths = by_dim.get(0, np.zeros((0, 2)))[:, 1]
                _h0_histogram(axes, deaths, bins)
                axes.set_xlabel(f"H0 death ({NORMALISED})")
                axes.set_ylabel("H0 classes (MST edges)")
                if len(rows) == 1:
                    axes.set_title(f"{_name(space)}\n{_scale_note(space, scales[space])}")
                else:
                    axes.set_title(f"H0: {len(deaths)} classes, all born at 0")
    figure.suptitle(meta.title("persistence diagrams"))
    return figure


@styled
def draw_barcodes(diagrams: dict[str, dict[int, np.ndarray]], meta: FigureMeta, *, max_bars: int = MAX_BARS):
    """Rows = spaces, columns = dimensions; the `max_bars` longest bars of each, longest on top; the
    x axis (normalised) is shared down each column."""
    scaled, scales = normalise(diagrams)
    dims = _dims(scaled)
    figure = new_figure(4.6 * len(dims) + 0.4, 2.9 * len(scaled) + 0.8)
    grid = figure.subplots(len(scaled), len(dims), squeeze=False, sharex="col")
    for row, (space, by_dim) in enumerate(scaled.items()):
        for col, dim in enumerate(dims):
            axes = grid[row][col]
            diagram = by_dim.get(dim, np.zeros((0, 2)))
            length = diagram[:, 1] - diagram[:, 0]
            shown = diagram[np.argsort(-length, kind="stable")[:max_bars]][::-1]
            axes.hlines(np.arange(len(shown)), shown[:, 0], shown[:, 1], color=DIM_COLORS.get(dim), lw=2.2)
            axes.set_ylim(-1, max(len(shown), 1))
            axes.set_yticks([])
            axes.grid(False, axis="y")
            count = (
                f"{len(shown)} longest of {len(diagram)}" if len(diagram) > len(shown) else f"{len(diagram)}"
            )
            axes.set_title(f"{_name(space)} — H{dim}: {count} bars\n{_scale_note(space, scales[space])}")
            if row == len(scaled) - 1:
                axes.set_xlabel(f"filtration value ({NORMALISED})")
    figure.suptitle(meta.title("persistence barcodes"))
    return figure


@styled
def draw_death_histograms(diagrams: dict[str, dict[int, np.ndarray]], meta: FigureMeta):
    """Rows = spaces, columns = dimensions: histograms of death times, x shared down each column."""
    scaled, scales = normalise(diagrams)
    dims = _dims(scaled)
    figure = new_figure(4.3 * len(dims) + 0.4, 2.7 * len(scaled) + 0.8)
    grid = figure.subplots(len(scaled), len(dims), squeeze=False, sharex="col")
    for col, dim in enumerate(dims):
        top = max(
            (
                float(by_dim[dim][:, 1].max())
                for by_dim in scaled.values()
                if dim in by_dim and len(by_dim[dim])
            ),
            default=1.0,
        )
        bins = np.linspace(0.0, max(top, 1e-12) * 1.02, 41)
        for row, (space, by_dim) in enumerate(scaled.items()):
            axes = grid[row][col]
            deaths = by_dim.get(dim, np.zeros((0, 2)))[:, 1]
            axes.hist(deaths, bins=bins, color=DIM_COLORS.get(dim), alpha=0.85)
            if len(deaths):
                axes.axvline(float(np.median(deaths)), color="black", lw=1, ls="--", label="median")
                axes.legend(loc="upper right")
            axes.set_title(
                f"{_name(space)} — H{dim}, {len(deaths)} deaths\n{_scale_note(space, scales[space])}"
            )
            axes.set_ylabel("classes")
            if row == len(scaled) - 1:
                axes.set_xlabel(f"death ({NORMALISED})")
    figure.suptitle(meta.title("death times"))
    return figure


def plot_persistence_diagrams(diagrams, meta: FigureMeta, path: Path, *, figure_format: str = "png") -> Path:
    return save_figure(draw_persistence_diagrams(diagrams, meta), path, figure_format)


def plot_barcodes(diagrams, meta: FigureMeta, path: Path, *, figure_format: str = "png") -> Path:
    return save_figure(draw_barcodes(diagrams, meta), path, figure_format)


def plot_death_histograms(diagrams, meta: FigureMeta, path: Path, *, figure_format: str = "png") -> Path:
    return save_figure(draw_death_histograms(diagrams, meta), path, figure_format)
