"""What `topofr.compat` changes outside the objective: the backbone and the training step.

`fixed` (default) keeps this project's choices; `reference` reproduces the reference implementation's
(docs/method.md §2 lists each difference, why fixed mode differs and what it changes):
- IResNet's embedding BatchNorm1d weight is trainable (and so weight-decayed), as the reference leaves it;
- gradient clipping (optim.clip_grad_norm) measures and scales backbone and classifier together,
  because the reference's classifier weight is a backbone parameter.
Both modes grow the fp16 GradScaler's scale every 100 good steps, insightface's setting (the reference
inherits it from there; it is not one of its defects).
The objective's own reference arithmetic (w2, GUM, negation pattern, λ, RSP leak) lives in
engine/topofr_objective.py and hardness/sds.py.
"""

from __future__ import annotations

from typing import Any

# insightface arcface_torch's GradScaler setting (torch's default is 2000), in both modes (docs/method.md §2)
SCALER_GROWTH_INTERVAL = 100


def reference_mode(recipe: Any) -> bool:
    return recipe.topofr.compat == "reference"


def backbone_options(recipe: Any) -> dict[str, Any]:
    """Keyword arguments for `create_backbone`."""
    return {"trainable_embedding_scale": reference_mode(recipe)}


def step_options(recipe: Any) -> dict[str, Any]:
    """Keyword arguments for `TrainStep`."""
    return {"clip_classifier": reference_mode(recipe), "scaler_growth_interval": SCALER_GROWTH_INTERVAL}
