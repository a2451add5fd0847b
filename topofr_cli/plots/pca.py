"""A 2-D (PCA) view of a sample coloured by identity, readable with many identities.

The largest identities of the sample get their own colour and a legend entry; the rest are grey, so
64 identities never share 20 colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from topofr_cli.plots.style import MUTED, PALETTE, FigureMeta, new_figure, save_figure, styled

COLOURED_IDENTITIES = 8
IDENTITY_COLORS = PALETTE[:6] + ("#6a3d9a", "#8c564b")  # no yellow: it vanishes on white


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
    gram = -0.5 * (
        squared - squared.mean(axis=0, keepdims=True) - squared.mean(axis=1, keepdims=True) + squared.mean()
    )
    return _embedding_2d(gram)


@styled
def draw_sample_pca(
    projected: np.ndarray,
    share: np.ndarray,
    labels: np.ndarray,
    meta: FigureMeta,
    what: str,
    *,
    coloured: int = COLOURED_IDENTITIES,
):
    """Scatter of a 2-D PCA (from `pca_from_points` / `pca_from_distances`): the `coloured` largest
    identities in colour with a legend (ties: smaller label first), every other identity grey."""
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((classes, -counts))[: min(coloured, len(IDENTITY_COLORS))]
    figure = new_figure(6.6, 5.4)
    axes = figure.add_subplot()
    highlighted = np.isin(codes, order)
    rest = len(classes) - len(order)
    axes.scatter(
        projected[~highlighted, 0],
        projected[~highlighted, 1],
        s=10,
        color=MUTED,
        alpha=0.5,
        lw=0,
        label=f"{rest} other identities" if rest else None,
    )
    for color, code in zip(IDENTITY_COLORS, order, strict=False):
        member = codes == code
        axes.scatter(
            projected[member, 0],
            projected[member, 1],
            s=22,
            color=color,
            alpha=0.95,
            edgecolors="white",
            linewidths=0.4,
            label=f"identity {classes[code]} ({counts[code]})",
        )
    axes.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    axes.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    axes.set_title(meta.title(f"{what}, {len(classes)} identities"))
    axes.legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), title="largest identities (images)", frameon=False
    )
    return figure


def plot_sample_pca(
    projected: np.ndarray,
    share: np.ndarray,
    labels: np.ndarray,
    meta: FigureMeta,
    what: str,
    path: Path,
    *,
    figure_format: str = "png",
) -> Path:
    return save_figure(draw_sample_pca(projected, share, labels, meta, what), path, figure_format)
