"""`cluster_embeddings`: embeddings in, a clustering out (no files, no model), for the command and the
benchmark alike."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from topofr_cli.clustering.methods import (
    METHODS,
    Clustering,
    average_linkage,
    cluster_cores,
    otsu_threshold,
    single_linkage,
    tomato,
)
from topofr_cli.clustering.neighbors import knn_forest, neighbor_graph, unit_rows
from topofr_cli.errors import TopofrError


@dataclass
class EmbeddingClustering:
    clustering: Clustering
    method: str
    threshold: float  # the edge / linkage cut τ, cosine distance
    threshold_source: str  # "given", "H0 gap", or what set it (e.g. a FAR on a .bin)
    merge_heights: np.ndarray  # H0 death times of the k-NN spanning forest (the persistence figure)
    distance_to_core: np.ndarray
    confidence: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.clustering.labels


def check_options(
    method: str, clusters: int | None, threshold: float | None, neighbors: int, min_size: int
) -> None:
    if method not in METHODS:
        raise TopofrError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if clusters is not None and method != "tomato":
        raise TopofrError("--clusters applies to --method tomato (linkage methods cut at a threshold)")
    if clusters is not None and clusters < 1:
        raise TopofrError(f"--clusters {clusters}: expected at least 1")
    if threshold is not None and not 0 < threshold < 2:
        raise TopofrError(f"--threshold {threshold}: expected a cosine distance between 0 and 2")
    if neighbors < 2:
        raise TopofrError(f"--neighbors {neighbors}: expected at least 2")
    if min_size < 1:
        raise TopofrError(f"--min-size {min_size}: expected at least 1")


def cluster_embeddings(
    embeddings: np.ndarray,
    *,
    method: str = "tomato",
    threshold: float | None = None,
    threshold_source: str = "given",
    clusters: int | None = None,
    neighbors: int = 10,
    min_size: int = 2,
) -> EmbeddingClustering:
    """Cluster [N, E] embeddings by cosine distance (see `clustering.methods`). Without `threshold`, τ is
    the Otsu split of the k-NN spanning forest's merge distances (the gap of the H0 diagram)."""
    check_options(method, clusters, threshold, neighbors, min_size)
    x = unit_rows(embeddings)
    if len(x) < 3:
        raise TopofrError(f"{len(x)} embeddings: clustering needs at least 3")
    linkage = method != "tomato"
    graph = neighbor_graph(x, neighbors, threshold=threshold if linkage else None)
    _, merge_heights = knn_forest(graph)
    if threshold is None:
        threshold, threshold_source = otsu_threshold(merge_heights), "H0 gap"
        if linkage:  # the exact forest below τ needs a second pass now that τ is known
            graph = neighbor_graph(x, neighbors, threshold=threshold)
    graph = replace(graph, threshold=threshold)
    if method == "tomato":
        result = tomato(graph, clusters=clusters, min_size=min_size)
    elif method == "single":
        result = single_linkage(graph, min_size)
    else:
        result = average_linkage(graph, x, min_size)
    distance, confidence = cluster_cores(x, result.labels, result.density)
    return EmbeddingClustering(
        result, method, threshold, threshold_source, merge_heights, distance, confidence
    )
