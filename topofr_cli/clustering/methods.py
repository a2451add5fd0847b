"""The three clusterings of `topofr cluster` on a `NeighborGraph` (docs/method.md §7).

- `single`: connected components of the pairs closer than the threshold τ (single linkage cut at τ).
- `average`: average linkage cut at τ. Every average-linkage merge below τ joins clusters whose
  closest pair is below τ too, so the clusters are unions inside the single-linkage components:
  each component is clustered on its own (exact, and small matrices only).
- `tomato` (default): ToMATo (gudhi) on the k-NN graph with its edges longer than τ removed, a
  log distance-to-measure density, and the merge threshold at the widest gap of its persistence
  diagram (prominences), unless a number of clusters is forced.

Points left alone (a group of fewer than `min_size`) are noise, label −1, never forced into a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from topofr_cli.clustering.neighbors import NeighborGraph, components
from topofr_cli.errors import TopofrError

METHODS = ("tomato", "single", "average")
AVERAGE_COMPONENT_LIMIT = 20_000  # condensed distance matrix of one component: 1.6 GB at this size


@dataclass
class Clustering:
    labels: np.ndarray  # [N] int64, −1 = noise, clusters 0 … C−1 largest first
    diagram: np.ndarray  # [M, 2]: ToMATo (birth, death) densities; linkage: (0, merge height)
    cut: float  # ToMATo: the merge prominence; linkage: the distance threshold
    density: np.ndarray  # [N] log distance-to-measure density (higher = denser)


def log_dtm_density(graph: NeighborGraph) -> np.ndarray:
    """−log of the root mean squared distance to the k nearest neighbours (a density up to its scale)."""
    mean_square = np.mean(graph.distances.astype(np.float64) ** 2, axis=1)
    return -0.5 * np.log(np.maximum(mean_square, 1e-12))


def relabel(raw: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters numbered 0 … C−1 by decreasing size; groups under `min_size` become −1."""
    _, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    big = counts >= min_size
    order = np.argsort(-counts, kind="stable")
    order = order[big[order]]
    number = np.full(len(counts), -1, dtype=np.int64)
    number[order] = np.arange(len(order))
    return number[inverse]


def otsu_threshold(lengths: np.ndarray, bins: int = 256) -> float:
    """The split of the (forest) edge lengths into short and long that maximises the between-class
    variance: the gap of the H0 persistence diagram between within- and between-identity merges."""
    lengths = np.asarray(lengths, dtype=np.float64)
    if len(lengths) < 2 or lengths.max() == lengths.min():
        raise TopofrError(
            "cannot choose a threshold from fewer than two distinct distances; pass --threshold"
        )
    hist, edges = np.histogram(lengths, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, total_mean = weight[-1], mean[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight / total - mean) ** 2 / (weight * (total - weight))
    between = np.where(np.isfinite(between), between, -np.inf)
    # an empty gap between the two modes is a plateau of equal scores: cut in its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    first, last = best[0], best[0]
    while last + 1 < len(between) and between[last + 1] >= between.max() * (1 - 1e-9):
        last += 1
    return float((edges[first + 1] + edges[last + 1]) / 2)


def single_linkage(graph: NeighborGraph, min_size: int = 2) -> Clustering:
    n = len(graph.indices)
    labels = relabel(components(n, graph.forest), min_size)
    diagram = np.stack([np.zeros(len(graph.forest_lengths)), graph.forest_lengths], axis=1)
    return Clustering(labels, diagram, float(graph.threshold), log_dtm_density(graph))


def average_linkage(graph: NeighborGraph, embeddings: np.ndarray, min_size: int = 2) -> Clustering:
    import scipy.cluster.hierarchy as hierarchy
    from scipy.spatial.distance import pdist

    n = len(graph.indices)
    parts = components(n, graph.forest)
    raw = np.arange(n, dtype=np.int64)  # singletons keep their own index as a label
    next_label = n
    heights = []
    order = np.argsort(parts, kind="stable")
    bounds = np.flatnonzero(np.diff(np.r_[-1, parts[order], n + 1]))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        members = order[lo:hi]
        if len(members) < 2:
            continue
        if len(members) > AVERAGE_COMPONENT_LIMIT:
            raise TopofrError(
                f"average linkage: {len(members):,} faces are linked below the threshold "
                f"{graph.threshold:.3f}; use --method tomato or single, or a lower --threshold"
            )
        tree = hierarchy.linkage(pdist(embeddings[members], "cosine"), "average")
        heights.append(tree[:, 2])
        sub = hierarchy.fcluster(tree, graph.threshold, criterion="distance")
        raw[members] = next_label + sub
        next_label += int(sub.max()) + 1
    heights = np.concatenate(heights) if heights else np.empty(0)
    diagram = np.stack([np.zeros(len(heights)), heights], axis=1)
    return Clustering(relabel(raw, min_size), diagram, float(graph.threshold), log_dtm_density(graph))


def widest_gap(prominence: np.ndarray) -> float:
    """The merge threshold in the middle of the widest gap between sorted prominences."""
    values = np.sort(prominence[np.isfinite(prominence)])[::-1]
    if len(values) < 2:
        return float(values[0] / 2) if len(values) else 0.0
    gaps = values[:-1] - values[1:]
    at = int(np.argmax(gaps))
    return float((values[at] + values[at + 1]) / 2)


def tomato(graph: NeighborGraph, *, clusters: int | None = None, min_size: int = 2) -> Clustering:
    """ToMATo on the k-NN graph cut at τ (see the module docstring)."""
    from gudhi.clustering.tomato import Tomato

    density = log_dtm_density(graph)
    keep = graph.distances <= graph.threshold
    neighbours = [row[ok] for row, ok in zip(graph.indices, keep, strict=True)]
    model = Tomato(graph_type="manual", density_type="manual", symmetrize_graph=True)
    model.fit(neighbours, weights=density)
    diagram = np.asarray(model.diagram_, dtype=np.float64).reshape(-1, 2)
    prominence = diagram[:, 0] - diagram[:, 1]
    if clusters is not None:
        model.n_clusters_ = clusters
        cut = float("nan")
    else:
        cut = widest_gap(prominence)
        model.merge_threshold_ = cut
    return Clustering(relabel(np.asarray(model.labels_), min_size), diagram, cut, density)


def cluster_cores(embeddings: np.ndarray, labels: np.ndarray, density: np.ndarray):
    """Per point: cosine distance to its cluster's core (the unit mean of its members) and a confidence,
    its density relative to the densest member of its cluster (1 at the mode; 0 for noise)."""
    from topofr_cli.clustering.neighbors import unit_rows

    x = unit_rows(embeddings)
    clustered = labels >= 0
    count = int(labels.max()) + 1 if clustered.any() else 0
    sums = np.zeros((count, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[clustered], x[clustered])
    cores = unit_rows(sums)
    distance = np.zeros(len(x), dtype=np.float64)
    distance[clustered] = 1.0 - np.einsum("ij,ij->i", x[clustered], cores[labels[clustered]])
    peak = np.full(count, -np.inf)
    np.maximum.at(peak, labels[clustered], density[clustered])
    confidence = np.zeros(len(x))
    confidence[clustered] = np.exp(density[clustered] - peak[labels[clustered]])
    return np.maximum(distance, 0.0), confidence
