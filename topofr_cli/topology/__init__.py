"""Topology: 0-dim persistence on the device and the PTSA alignment loss (docs/method.md §1.2)."""

from topofr_cli.topology.persistence import death_times, h0_pairs, validate_distance_matrix
from topofr_cli.topology.ptsa import (
    PTSALoss,
    input_distances,
    latent_distances,
    ptsa_from_distances,
    ptsa_loss,
)

__all__ = [
    "h0_pairs",
    "death_times",
    "validate_distance_matrix",
    "input_distances",
    "latent_distances",
    "ptsa_loss",
    "ptsa_from_distances",
    "PTSALoss",
]
