"""Hardness: structure damage estimation — the GUM posterior and the SDE sample weights (REFERENCE §1.3)."""

from topofr_cli.hardness.gum import GUMResult, gum_posterior
from topofr_cli.hardness.sds import (
    sample_weights,
    sde_statistic,
    sde_weights,
    structure_damage_score,
    weighted_classification_loss,
)

__all__ = [
    "GUMResult",
    "gum_posterior",
    "sde_statistic",
    "sample_weights",
    "sde_weights",
    "structure_damage_score",
    "weighted_classification_loss",
]
