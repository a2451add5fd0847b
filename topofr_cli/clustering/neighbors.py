"""One blocked pass over all pairs of unit embeddings: each point's k nearest neighbours and, for a
distance threshold τ, the exact minimum spanning forest of every pair closer than τ.

Distances are cosine distances, 1 − cos, in [0, 2]. A block of rows × all points is scored with
one matrix product and dropped; memory holds O(N·k) neighbours and at most N − 1 forest edges,
never the N × N matrix. The forest is kept exact across blocks by the cycle property: the
minimum spanning forest of (forest so far ∪ the block's edges) is the forest of all edges so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

BLOCK_ENTRIES = 2**25  # scores of one block (rows × N), 128 MiB as float32
EDGE_BUDGET = 2**24  # threshold edges gathered before they are folded into the forest
SHIFT = 1.0  # added to every forest weight: scipy's sparse graphs drop explicit zeros (duplicate faces)


@dataclass
class NeighborGraph:
    indices: np.ndarray  # [N, k] int64, nearest first
    distances: np.ndarray  # [N, k] float32 cosine distances
    forest: np.ndarray | None  # [M, 2] int64 edges of the minimum spanning forest of pairs ≤ threshold
    forest_lengths: np.ndarray | None  # [M] float64
    threshold: float | None


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def spanning_forest(num_points: int, edges: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum spanning forest (edges, lengths) of an edge list."""
    if len(edges) == 0:
        return np.empty((0, 2), np.int64), np.empty(0)
    graph = scipy.sparse.coo_matrix(
        (lengths + SHIFT, (edges[:, 0], edges[:, 1])), shape=(num_points, num_points)
    ).tocsr()  # duplicates add up: callers pass each edge once
    tree = scipy.sparse.csgraph.minimum_spanning_tree(graph).tocoo()
    return np.stack([tree.row, tree.col], axis=1).astype(np.int64), tree.data - SHIFT


class _RunningNearest:
    """The k smallest distances seen so far for each row, merged block by block."""

    def __init__(self, n: int, k: int):
        self.values = torch.full((n, k), -torch.inf)  # similarities, largest first
        self.indices = torch.zeros((n, k), dtype=torch.int64)

    def offer(self, rows: slice, sims: torch.Tensor, first_column: int) -> None:
        k = self.values.shape[1]
        top = sims.topk(min(k, sims.shape[1]), dim=1)
        values = torch.cat([self.values[rows], top.values], dim=1)
        indices = torch.cat([self.indices[rows], top.indices + first_column], dim=1)
        best = values.topk(k, dim=1)
        self.values[rows] = best.values
        self.indices[rows] = indices.gather(1, best.indices)


def neighbor_graph(
    embeddings: np.ndarray, k: int, *, threshold: float | None = None, block_entries: int = BLOCK_ENTRIES
) -> NeighborGraph:
    """k nearest neighbours of every point (itself excluded) and, with `threshold`, the exact
    minimum spanning forest of all pairs at cosine distance ≤ threshold (single linkage up to it).

    Only blocks on and above the diagonal are scored (each block serves its rows and, transposed,
    its columns), so the pass costs N²/2 dot products."""
    x = torch.from_numpy(unit_rows(embeddings))
    n = len(x)
    k = max(1, min(k, n - 1))
    size = max(1, min(n, int(block_entries**0.5)))
    nearest = _RunningNearest(n, k)
    forest, lengths = np.empty((0, 2), np.int64), np.empty(0)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    pending_count = 0
    for top in range(0, n, size):
        rows = slice(top, min(n, top + size))
        for left in range(top, n, size):
            cols = slice(left, min(n, left + size))
            sims = x[rows] @ x[cols].T
            if left == top:  # a point is not its own neighbour
                sims.fill_diagonal_(-torch.inf)
            nearest.offer(rows, sims, left)
            if left != top:
                nearest.offer(cols, sims.T, top)
            if threshold is None:
                continue
            edges, edge_lengths = _close_pairs(sims, threshold, top, left)
            pending.append((edges, edge_lengths))
            pending_count += len(edges)
            if pending_count > EDGE_BUDGET:
                forest, lengths = _fold(n, forest, lengths, pending)
                pending, pending_count = [], 0
    if threshold is not None:
        forest, lengths = _fold(n, forest, lengths, pending)
    return NeighborGraph(
        nearest.indices.numpy(),
        np.maximum(1.0 - nearest.values.numpy(), 0.0).astype(np.float32),
        forest if threshold is not None else None,
        lengths if threshold is not None else None,
        threshold,
    )


def _close_pairs(sims: torch.Tensor, threshold: float, top: int, left: int):
    """Pairs of a block at distance ≤ threshold, each once (row < column), with their lengths."""
    close = (sims >= 1.0 - threshold).nonzero()
    i, j = close[:, 0], close[:, 1]
    keep = i + top < j + left
    i, j = i[keep], j[keep]
    lengths = (1.0 - sims[i, j].double()).clamp_min(0.0).numpy()
    return np.stack([i.numpy() + top, j.numpy() + left], axis=1), lengths


def _fold(n, forest, lengths, pending):
    edges = np.concatenate([forest, *(e for e, _ in pending)])
    weights = np.concatenate([lengths, *(w for _, w in pending)])
    return spanning_forest(n, edges, weights)


def knn_forest(graph: NeighborGraph) -> tuple[np.ndarray, np.ndarray]:
    """Minimum spanning forest of the k-NN graph: the short part of the single-linkage dendrogram
    (its H0 death times), without a threshold."""
    n, k = graph.indices.shape
    rows = np.repeat(np.arange(n), k)
    cols = graph.indices.reshape(-1)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    pairs, first = np.unique(lo * n + hi, return_index=True)
    edges = np.stack([pairs // n, pairs % n], axis=1)
    return spanning_forest(n, edges, graph.distances.reshape(-1)[first].astype(np.float64))


def components(num_points: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label of every point (0 … C−1) of an edge list."""
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_points, num_points)
    )
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]
