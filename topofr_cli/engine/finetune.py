"""What a fine-tuning run changes in the training (docs/method.md, Fine-tuning):

- `optim.backbone_lr_multiplier`: the backbone's parameter group learns at optim.lr × multiplier (the
  schedule multiplies each group's lr by its `lr_multiplier`); the new classifier keeps optim.lr;
- `train.freeze_backbone_steps`: for the first N steps the backbone runs in inference mode, without
  gradients (its weights, BatchNorm statistics and optimizer state stay bit-identical) while the new
  head settles; the step index decides, so a resumed run freezes exactly the same steps;
- `train.batchnorm: frozen`: BatchNorm layers always normalise with, and never update, the running
  statistics they were loaded with (their affine weights still train).

Each is a no-op at its default, so a recipe that sets none of them trains as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from topofr_cli.config import Recipe
from topofr_cli.engine.init_weights import InitWeights
from topofr_cli.errors import TopofrError

BACKBONE_GROUP = 0  # the backbone's parameter group in the backbone optimizer (λ's, if any, comes after)


def prepare_parts(recipe: Recipe, parts: Any, init: InitWeights | None) -> None:
    """Load the init weights (a fresh start only: pass None when resuming), set the backbone's lr
    multiplier and the BatchNorm mode. `parts`: engine.state.TrainingParts."""
    if init is not None:
        try:
            init.load_into(parts.backbone, parts.objective)
        except RuntimeError as exc:  # e.g. a kept objective state of another TopoFR configuration
            first = str(exc).strip().splitlines()[0]
            raise TopofrError(f"{init.path}: its weights do not load into this run ({first})") from None
    parts.backbone_optimizer.param_groups[BACKBONE_GROUP]["lr_multiplier"] = (
        recipe.optim.backbone_lr_multiplier
    )
    if recipe.train.batchnorm == "frozen":
        freeze_batchnorm(parts.backbone)


def banner_lines(recipe: Recipe, init: InitWeights | None) -> list[str]:
    """The start banner's fine-tuning lines: where the weights came from (also on a resumed run)."""
    lines = []
    if init is not None:
        lines.append(init.describe())
    elif recipe.train.init is not None:
        lines.append(
            f"a fine-tune that started from {recipe.train.init} (sha256 {recipe.train.init_sha256}), resumed"
        )
    train, multiplier = recipe.train, recipe.optim.backbone_lr_multiplier
    if (
        train.init is not None
        or multiplier != 1.0
        or train.freeze_backbone_steps
        or train.batchnorm != "update"
    ):
        lines.append(
            f"backbone lr × {multiplier:g}, frozen for the first {train.freeze_backbone_steps} steps; "
            f"BatchNorm statistics {'updated' if train.batchnorm == 'update' else 'frozen'}"
        )
    return lines


def _stay_in_eval(module: nn.Module, _inputs: Any) -> None:
    module.training = False


def freeze_batchnorm(backbone: nn.Module) -> int:
    """Keep every BatchNorm layer in inference mode whatever `train()` says; returns how many."""
    layers = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.register_forward_pre_hook(_stay_in_eval)
    return len(layers)


class _InferenceForward:
    """The backbone as the frozen steps see it: eval mode, no autograd graph."""

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                return self.backbone(x)
        finally:
            self.backbone.train(was_training)


class FrozenBackboneSteps:
    """Wraps a `TrainStep`: steps below `frozen_steps` run the backbone in inference mode, so no
    gradient reaches it and its optimizer skips it (fused SGD/AdamW leave a parameter without a
    gradient untouched: no momentum, no weight decay). Later steps run the step unchanged."""

    def __init__(self, step_fn: Any, backbone: nn.Module, frozen_steps: int) -> None:
        self.step_fn = step_fn
        self.frozen_steps = frozen_steps
        self.live = step_fn.backbone
        self.frozen = _InferenceForward(backbone)

    def __getattr__(self, name: str) -> Any:  # scaler, device, …: the wrapped step's
        return getattr(self.step_fn, name)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> Any:
        self.step_fn.backbone = self.frozen if step < self.frozen_steps else self.live
        return self.step_fn(images, labels, step)


def wrap_step(recipe: Recipe, backbone: nn.Module, step_fn: Any) -> Any:
    """The step the loop calls: `step_fn` itself unless the recipe freezes the backbone's first steps."""
    steps = recipe.train.freeze_backbone_steps
    return FrozenBackboneSteps(step_fn, backbone, steps) if steps > 0 else step_fn
