"""Hardness: structure damage estimation — the GUM posterior and the SDE sample weights (docs/method.md §1.3).

The names below load their module (and torch) on first use, so importing the package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GUMResult": "topofr_cli.hardness.gum",
    "gum_posterior": "topofr_cli.hardness.gum",
    "sde_statistic": "topofr_cli.hardness.sds",
    "sample_weights": "topofr_cli.hardness.sds",
    "sde_weights": "topofr_cli.hardness.sds",
    "structure_damage_score": "topofr_cli.hardness.sds",
    "weighted_classification_loss": "topofr_cli.hardness.sds",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topofr_cli.hardness' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
