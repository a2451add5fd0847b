"""Persistence diagrams of a full distance matrix (H0 exact, H1 via gudhi) and distances between them.

A diagram is a float64 array [k, 2] of (birth, death) rows, finite deaths only:

* H0 (docs/method.md §1.2): births 0, deaths = the n − 1 minimum-spanning-tree edge lengths from
  `topology.h0_pairs`. The one essential class (0, ∞) that every non-empty space has is left out of
  the diagram: it is the same point in both diagrams being compared, so the optimal matching pairs
  it with itself at cost 0 and leaving it out changes no bottleneck or Wasserstein distance.
* H1: the Vietoris–Rips filtration of the matrix, built by gudhi with edge collapse
  (RipsComplex 1-skeleton → collapse_edges → expansion(2) → persistence). All H1 classes die:
  the full 2-skeleton of n points is a cone, so there are no essential H1 classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import gudhi
import gudhi.hera
import numpy as np
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.topology import death_times, h0_pairs

__all__ = [
    "SUPPORTED_DIMS",
    "WASSERSTEIN_DELTA",
    "DiagramDistances",
    "diagram_distances",
    "enclosing_radius",
    "h0_diagram",
    "h0_diagram_from_pairs",
    "h1_diagram",
]

SUPPORTED_DIMS = (0, 1)

# hera's Wasserstein is a (1 + delta)-approximation; gudhi's default 0.01 lets a 1 % error into
# collapse curves whose steps can be smaller than that. 1e-4 costs ~2× the time of the default.
WASSERSTEIN_DELTA = 1e-4

# Repeated collapse passes keep shrinking the graph; beyond a few the passes cost more than the
# smaller complex saves (measured on 512-point clouds).
COLLAPSE_ITERATIONS = 3


def _as_numpy_matrix(dist: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    matrix = dist.detach().cpu().numpy() if isinstance(dist, torch.Tensor) else np.asarray(dist)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise TopofrError(f"{name}: expected a square [n, n] distance matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise TopofrError(f"{name}: contains NaN or infinite distances")
    return matrix.astype(np.float64, copy=False)


def h0_diagram_from_pairs(dist: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    """H0 diagram [n − 1, 2] from the MST edges `pairs` of `dist` (births 0, deaths = edge lengths)."""
    deaths = death_times(dist, pairs).detach().cpu().numpy().astype(np.float64)
    return np.stack([np.zeros_like(deaths), deaths], axis=1)


def h0_diagram(dist: torch.Tensor | np.ndarray, name: str = "distance matrix") -> np.ndarray:
    """The finite H0 diagram of a full distance matrix (docs/method.md §1.2: deaths = MST edge lengths)."""
    tensor = dist if isinstance(dist, torch.Tensor) else torch.from_numpy(_as_numpy_matrix(dist, name))
    return h0_diagram_from_pairs(tensor, h0_pairs(tensor))


def enclosing_radius(matrix: np.ndarray) -> float:
    """min_i max_j d(i, j): from this filtration value on, the Rips complex is a cone over the
    minimising vertex, so every class of dimension ≥ 1 is dead by then (the bound Ripser uses)."""
    return float(matrix.max(axis=1).min()) if len(matrix) else 0.0


def h1_diagram(dist: torch.Tensor | np.ndarray, name: str = "distance matrix") -> np.ndarray:
    """The H1 diagram [k, 2] of the Vietoris–Rips filtration of a full distance matrix.

    Edges longer than the enclosing radius are never added: no H1 class is born or dies after it,
    so the diagram is identical to the unthresholded one while the complex is smaller (on
    high-dimensional clouds the radius is close to the largest distance, so the saving is modest).
    Edge collapse (Boissonnat–Pritam) preserves the persistence of the flag complex exactly.
    """
    matrix = _as_numpy_matrix(dist, name)
    if len(matrix) < 3:
        return np.zeros((0, 2), dtype=np.float64)
    # The next float above the radius keeps edges of exactly that length whatever gudhi's comparison.
    threshold = float(np.nextafter(enclosing_radius(matrix), np.inf))
    tree = gudhi.RipsComplex(distance_matrix=matrix, max_edge_length=threshold).create_simplex_tree(
        max_dimension=1
    )
    tree.collapse_edges(COLLAPSE_ITERATIONS)
    tree.expansion(2)
    tree.persistence()  # gudhi releases the GIL here, so spaces can be computed in threads
    pairs = np.asarray(tree.persistence_intervals_in_dimension(1), dtype=np.float64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


@dataclass(frozen=True)
class DiagramDistances:
    """Distances between two diagrams of the same homology dimension (L∞ ground metric)."""

    bottleneck: float
    wasserstein_1: float
    wasserstein_2: float

    def as_dict(self) -> dict[str, float]:
        return {
            "bottleneck": self.bottleneck,
            "wasserstein_1": self.wasserstein_1,
            "wasserstein_2": self.wasserstein_2,
        }


def _check_finite_diagram(diagram: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(array).all():
        raise TopofrError(f"{name}: diagram has non-finite points (leave out essential classes first)")
    # Points on the diagonal cost nothing in either distance, and hera crashes (segfault) on them:
    # a collapsed model's H0 diagram is all (0, 0).
    return array[array[:, 1] > array[:, 0]]


def diagram_distances(
    first: np.ndarray, second: np.ndarray, *, wasserstein_delta: float = WASSERSTEIN_DELTA
) -> DiagramDistances:
    """Bottleneck and Wasserstein (p = 1, 2) distances between two finite diagrams, by gudhi.

    Bottleneck: gudhi.bottleneck_distance (exact up to the last bits of the mantissa). Wasserstein:
    gudhi.hera.wasserstein_distance(order=p, internal_p=inf), relative error ≤ `wasserstein_delta`.
    """
    a = _check_finite_diagram(first, "first")
    b = _check_finite_diagram(second, "second")
    return DiagramDistances(
        bottleneck=float(gudhi.bottleneck_distance(a, b)),
        wasserstein_1=float(
            gudhi.hera.wasserstein_distance(a, b, order=1.0, internal_p=np.inf, delta=wasserstein_delta)
        ),
        wasserstein_2=float(
            gudhi.hera.wasserstein_distance(a, b, order=2.0, internal_p=np.inf, delta=wasserstein_delta)
        ),
    )
