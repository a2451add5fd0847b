"""Figures for `topofr analyze-topology`: persistence diagrams, barcodes, death-time histograms and a
2-D (PCA) view of a sample coloured by identity.

`diagrams` arguments map a space name ("input", "latent", …) to {dim: [k, 2] (birth, death)}.
Figures are built on `matplotlib.figure.Figure` (no pyplot state), so they can be drawn anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from topofr_cli.artifacts.atomic import write_figure

DIM_COLORS = {0: "#1f77b4", 1: "#d62728", 2: "#2ca02c"}
SPACE_TITLES = {
    "input": "input space (pixels, A^X)",
    "latent": "latent space (embeddings / λ, A^Z)",
    "latent_l2": "latent space (L2-normalised)",
}


def _title(space: str) -> str:
    return SPACE_TITLES.get(space, space)


def _save(figure: Figure, path: Path) -> Path:
    return write_figure(figure, path, dpi=110)


def plot_persistence_diagrams(diagrams: dict[str, dict[int, np.ndarray]], path: Path) -> Path:
    """One (birth, death) scatter per space, side by side, all dimensions in one panel with the diagonal."""
    figure = Figure(figsize=(5.2 * len(diagrams), 5), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(diagrams), squeeze=False)[0])
    for axes, (space, by_dim) in zip(axes_list, diagrams.items(), strict=True):
        finite = [d for d in by_dim.values() if len(d)]
        top = max((float(d.max()) for d in finite), default=1.0) * 1.05 or 1.0
        axes.plot([0, top], [0, top], color="#7f7f7f", lw=1)
        for dim, diagram in by_dim.items():
            axes.scatter(diagram[:, 0], diagram[:, 1], s=9, alpha=0.7, color=DIM_COLORS.get(dim),
                         label=f"H{dim} ({len(diagram)} points)")
        axes.set_xlim(-0.02 * top, top)
        axes.set_ylim(-0.02 * top, top)
        axes.set_aspect("equal")
        axes.set_xlabel("birth")
        axes.set_ylabel("death")
        axes.set_title(_title(space))
        axes.legend(loc="lower right")
    return _save(figure, path)


def plot_barcodes(diagrams: dict[str, dict[int, np.ndarray]], path: Path) -> Path:
    """Barcodes, one panel per (space, dimension); H0 bars by death, H1 bars by birth."""
    dims = sorted({dim for by_dim in diagrams.values() for dim in by_dim})
    figure = Figure(figsize=(5.5 * len(dims), 3.6 * len(diagrams)), layout="constrained")
    grid = figure.subplots(len(diagrams), len(dims), squeeze=False)
    for row, (space, by_dim) in enumerate(diagrams.items()):
        for col, dim in enumerate(dims):
            axes = grid[row][col]
            diagram = by_dim.get(dim, np.zeros((0, 2)))
            order = np.lexsort((diagram[:, 1], diagram[:, 0]))
            bars = diagram[order]
            axes.hlines(np.arange(len(bars)), bars[:, 0], bars[:, 1], color=DIM_COLORS.get(dim),
                        lw=max(0.3, min(2.0, 150 / max(len(bars), 1))))
            axes.set_title(f"{_title(space)} — H{dim}, {len(bars)} bars", fontsize=10)
            axes.set_xlabel("filtration value (distance)")
            axes.set_yticks([])
    return _save(figure, path)


def plot_death_histograms(diagrams: dict[str, dict[int, np.ndarray]], path: Path) -> Path:
    """Histograms of death times, one panel per (space, dimension) (spaces have different scales)."""
    dims = sorted({dim for by_dim in diagrams.values() for dim in by_dim})
    figure = Figure(figsize=(5 * len(dims), 3.4 * len(diagrams)), layout="constrained")
    grid = figure.subplots(len(diagrams), len(dims), squeeze=False)
    for row, (space, by_dim) in enumerate(diagrams.items()):
        for col, dim in enumerate(dims):
            axes = grid[row][col]
            deaths = by_dim.get(dim, np.zeros((0, 2)))[:, 1]
            if len(deaths):
                axes.hist(deaths, bins=min(60, max(10, len(deaths) // 8)), color=DIM_COLORS.get(dim))
                axes.axvline(float(np.median(deaths)), color="black", lw=1, ls="--", label="median")
                axes.legend(loc="upper right")
            axes.set_title(f"{_title(space)} — H{dim} deaths", fontsize=10)
            axes.set_xlabel("death time")
            axes.set_ylabel("pairs")
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, path)


def _leading_two(symmetric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two largest eigenvalues (descending) and their eigenvectors of a symmetric matrix."""
    n = len(symmetric)
    if n > 256:  # Lanczos: a few dozen mat-vecs instead of a full O(n³) decomposition
        start = np.random.default_rng(0).standard_normal(n)  # fixed start vector: same figure every run
        values, vectors = scipy.sparse.linalg.eigsh(symmetric, k=2, which="LA", v0=start)
    else:
        values, vectors = scipy.linalg.eigh(symmetric, subset_by_index=[max(n - 2, 0), n - 1])
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def _embedding_2d(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    projected = np.zeros((len(gram), 2))
    share = np.zeros(2)
    total = float(np.trace(gram))
    if len(gram) < 2 or total <= 0.0:
        return projected, share
    values, vectors = _leading_two(gram)
    values = np.clip(values, 0.0, None)
    k = len(values)
    projected[:, :k] = vectors * np.sqrt(values)
    share[:k] = values / total
    return projected, share


def pca_from_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates [n, 2] of `points` [n, d] and the share of the variance per axis."""
    data = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    centred = data - data.mean(axis=0, keepdims=True)
    return _embedding_2d(centred @ centred.T)


def pca_from_distances(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same PCA view from a Euclidean distance matrix (classical MDS: −½·J·D²·J is the Gram matrix
    of the centred points), so the pixel space needs no second pass over the images."""
    squared = np.asarray(dist, dtype=np.float64) ** 2
    gram = -0.5 * (squared - squared.mean(axis=0, keepdims=True) - squared.mean(axis=1, keepdims=True)
                   + squared.mean())
    return _embedding_2d(gram)


def plot_sample_pca(projected: np.ndarray, share: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    """Scatter of a sample's 2-D PCA (from `pca_from_points` / `pca_from_distances`), coloured by
    identity (colours repeat beyond 20 identities)."""
    _, codes = np.unique(labels, return_inverse=True)
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    axes = figure.subplots()
    axes.scatter(projected[:, 0], projected[:, 1], c=codes % 20, cmap="tab20", vmin=0, vmax=19, s=14, alpha=0.85)
    axes.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    axes.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    axes.set_title(f"{title}\n{len(projected)} samples, {codes.max() + 1 if len(codes) else 0} identities")
    return _save(figure, path)
