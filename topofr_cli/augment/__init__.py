"""Augmentation: RSP, the random structure perturbation of TopoFR (docs/method.md §1.1)."""

from topofr_cli.augment.rsp import RandomStructurePerturbation

__all__ = ["RandomStructurePerturbation"]
