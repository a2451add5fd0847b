"""Figures of `topofr cluster`: the persistence of the clustering with the chosen cut, and a gallery of
the largest clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.plots.style import PALETTE, FigureMeta, new_figure, save_figure, styled


def _h0_panel(axes, merge_heights: np.ndarray, threshold: float) -> None:
    heights = np.asarray(merge_heights, dtype=np.float64)
    axes.hist(heights, bins=80, color=PALETTE[0], alpha=0.85)
    axes.axvline(threshold, color=PALETTE[1], lw=1.6, label=f"cut τ = {threshold:.3f}")
    axes.set_yscale("log")
    axes.set_xlabel("H0 death time = single-linkage merge distance (1 − cos)")
    axes.set_ylabel("merges (log scale)")
    axes.set_title(f"H0 persistence: {len(heights):,} merges, {int((heights > threshold).sum()):,} above τ")
    axes.legend(loc="upper right", frameon=True)


def _tomato_panel(axes, diagram: np.ndarray, cut: float, clusters: int) -> None:
    births, deaths = diagram[:, 0], diagram[:, 1]
    prominence = births - deaths
    kept = prominence > cut if np.isfinite(cut) else np.zeros(len(births), dtype=bool)
    axes.scatter(births[~kept], deaths[~kept], s=6, color="#999999", label="merged (below the cut)")
    axes.scatter(births[kept], deaths[kept], s=10, color=PALETTE[0], label="kept apart (above the cut)")
    if len(births):
        low, high = float(min(births.min(), deaths.min())), float(births.max())
        line = np.array([low, high])
        axes.plot(line, line, color="#555555", lw=0.8)
        if np.isfinite(cut):
            axes.plot(line, line - cut, color=PALETTE[1], lw=1.4, ls="--", label=f"cut: prominence {cut:.3f}")
    axes.set_xlabel("birth: density of the cluster's peak (log DTM)")
    axes.set_ylabel("death: density where it merges")
    axes.set_title(f"ToMATo persistence diagram → {clusters:,} clusters")
    axes.legend(loc="lower right", frameon=True, fontsize=7)


@styled
def draw_cluster_persistence(
    merge_heights: np.ndarray, threshold: float, meta: FigureMeta, *, tomato: Any = None
):
    """Left: H0 merge distances with the edge cut τ; right (ToMATo): its diagram with the merge cut.
    `tomato`: (diagram [M, 2], prominence cut, clusters) or None."""
    panels = 2 if tomato is not None else 1
    figure = new_figure(5.6 * panels, 4.6)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    _h0_panel(axes[0], merge_heights, threshold)
    if tomato is not None:
        _tomato_panel(axes[1], *tomato)
    figure.suptitle(meta.title("clustering persistence"))
    return figure


@styled
def draw_cluster_gallery(
    dataset: Any, labels: np.ndarray, meta: FigureMeta, *, clusters: int = 8, per: int = 6
):
    """The `clusters` largest clusters, one row each: up to `per` member images with their keys."""
    shown = [c for c in range(min(clusters, int(labels.max()) + 1 if (labels >= 0).any() else 0))]
    figure = new_figure(per * 1.2 + 0.4, max(1, len(shown)) * 1.45 + 0.6)
    grid = figure.add_gridspec(max(1, len(shown)), per)
    for row, cluster in enumerate(shown):
        members = np.flatnonzero(labels == cluster)
        for col in range(per):
            axes = figure.add_subplot(grid[row, col])
            axes.set_xticks([])
            axes.set_yticks([])
            axes.grid(False)
            if col >= len(members):
                axes.axis("off")
                continue
            axes.imshow(dataset[int(members[col])][0])
            key = str(dataset.source_key(int(members[col])))
            caption = key if len(key) <= 16 else "…" + key[-15:]
            if col == 0:
                caption = f"cluster {cluster} ({len(members)})\n{caption}"
            axes.set_title(caption, fontsize=6.5, pad=2)
    figure.suptitle(meta.title(f"the {len(shown)} largest clusters"))
    return figure


def plot_cluster_persistence(
    merge_heights, threshold, meta, path: Path, *, tomato=None, figure_format="png"
) -> Path:
    return save_figure(
        draw_cluster_persistence(merge_heights, threshold, meta, tomato=tomato), path, figure_format
    )


def plot_cluster_gallery(dataset, labels, meta, path: Path, *, figure_format="png") -> Path:
    return save_figure(draw_cluster_gallery(dataset, labels, meta), path, figure_format)
