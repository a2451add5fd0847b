"""The topology of one sample in several spaces, and how a latent space compares with the input space.

Spaces: "input" (pixels, A^X of docs/method.md §1.2), "latent" (embeddings before L2 normalisation divided
by the latent scale λ, A^Z of §1.2 — the space PTSA aligns) and "latent_l2" (L2-normalised
embeddings, the space faces are matched in).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.topology import h0_pairs, ptsa_from_distances
from topofr_cli.topology.diagrams import (
    SUPPORTED_DIMS,
    DiagramDistances,
    diagram_distances,
    h0_diagram_from_pairs,
    h1_diagram,
)

INPUT_SPACE = "input"
LATENT_SPACE = "latent"
LATENT_L2_SPACE = "latent_l2"
LATENT_SPACES = (LATENT_SPACE, LATENT_L2_SPACE)


def parse_dims(text: str) -> tuple[int, ...]:
    """ "0,1" → (0, 1); only the dimensions this tool computes (H0 exact, H1 by gudhi)."""
    try:
        dims = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise TopofrError(f"--dims: expected comma-separated integers such as 0,1, got {text!r}") from None
    if not dims or any(d not in SUPPORTED_DIMS for d in dims):
        raise TopofrError(f"--dims: supported homology dimensions are 0 and 1, got {text!r}")
    return tuple(dims)


@dataclass
class SpaceTopology:
    """Distance matrix, H0 persistence pairs (MST edges) and diagrams of one space."""

    space: str
    distances: torch.Tensor | None  # [n, n] float, CPU (None once no longer needed)
    pairs: torch.Tensor  # [n − 1, 2] MST edges, non-decreasing length
    diagrams: dict[int, np.ndarray]  # dim → [k, 2] (birth, death), finite points only
    seconds: dict[str, float] = field(default_factory=dict)  # "h0", "h1" wall times


def _topology_without_h1(space: str, dist: torch.Tensor, dims: Sequence[int]) -> SpaceTopology:
    dist = dist.detach().cpu()
    start = time.perf_counter()
    pairs = h0_pairs(dist)
    diagrams = {0: h0_diagram_from_pairs(dist, pairs)} if 0 in dims else {}
    return SpaceTopology(space, dist, pairs, diagrams, {"h0": time.perf_counter() - start})


def _add_h1(topology: SpaceTopology) -> SpaceTopology:
    start = time.perf_counter()
    topology.diagrams[1] = h1_diagram(topology.distances, name=f"{topology.space} distances")
    topology.seconds["h1"] = time.perf_counter() - start
    return topology


def space_topologies(
    matrices: dict[str, torch.Tensor], dims: Sequence[int], *, threads: int | None = None
) -> dict[str, SpaceTopology]:
    """Topology of each named distance matrix. H1 runs in threads (gudhi releases the GIL), one
    space per thread, because it dominates the cost; H0 is a few torch calls per space."""
    topologies = {space: _topology_without_h1(space, dist, dims) for space, dist in matrices.items()}
    if 1 in dims:
        workers = max(1, min(threads or os.cpu_count() or 1, len(topologies)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_add_h1, topologies.values()))
    # Keep the diagrams in dimension order whatever order they were filled in.
    for topology in topologies.values():
        topology.diagrams = dict(sorted(topology.diagrams.items()))
    return topologies


@dataclass
class SpaceComparison:
    """A latent space against the input space: diagram distances per dimension and the PTSA terms."""

    space: str
    distances: dict[int, DiagramDistances]
    ptsa_official: float
    ptsa_symmetric: float
    shared_h0_fraction: float  # share of the n − 1 MST edges that are MST edges in both spaces

    def as_dict(self) -> dict:
        return {
            "diagram_distances": {str(dim): value.as_dict() for dim, value in self.distances.items()},
            "ptsa_official": self.ptsa_official,
            "ptsa_symmetric": self.ptsa_symmetric,
            "shared_h0_fraction": self.shared_h0_fraction,
        }


def ptsa_terms(
    a_x: torch.Tensor, pairs_x: torch.Tensor, a_z: torch.Tensor, pairs_z: torch.Tensor
) -> tuple[float, float]:
    """Both PTSA loss forms (docs/method.md §1.2) from matrices and MST edges already computed.

    Skips recomputing A^X from the pixels and the two trees, which is most of `ptsa_loss`'s cost.
    """
    official = ptsa_from_distances(a_x, pairs_x, a_z, pairs_z, "official")
    symmetric = ptsa_from_distances(a_x, pairs_x, a_z, pairs_z, "symmetric")
    return float(official), float(symmetric)


def shared_edge_fraction(pairs_x: torch.Tensor, pairs_z: torch.Tensor, n: int) -> float:
    """|π^X ∩ π^Z| / (n − 1): the H0 persistence pairs (MST edges) the two spaces have in common."""
    if len(pairs_x) == 0:
        return 1.0
    edge_x = pairs_x[:, 0] * n + pairs_x[:, 1]
    edge_z = pairs_z[:, 0] * n + pairs_z[:, 1]
    return float(torch.isin(edge_x, edge_z).sum()) / len(edge_x)


def compare_spaces(input_topology: SpaceTopology, latent_topology: SpaceTopology) -> SpaceComparison:
    """Diagram distances (every dimension both have) and PTSA terms of a latent space vs the input."""
    n = input_topology.distances.shape[0]
    if latent_topology.distances.shape[0] != n:
        raise TopofrError(
            f"{latent_topology.space}: {latent_topology.distances.shape[0]} samples, the input space has {n}"
        )
    dims = [dim for dim in input_topology.diagrams if dim in latent_topology.diagrams]
    distances = {
        dim: diagram_distances(input_topology.diagrams[dim], latent_topology.diagrams[dim]) for dim in dims
    }
    official, symmetric = ptsa_terms(
        input_topology.distances, input_topology.pairs, latent_topology.distances, latent_topology.pairs
    )
    return SpaceComparison(
        space=latent_topology.space,
        distances=distances,
        ptsa_official=official,
        ptsa_symmetric=symmetric,
        shared_h0_fraction=shared_edge_fraction(input_topology.pairs, latent_topology.pairs, n),
    )
