"""Training state ⇄ `artifacts.Checkpoint` (docs/interfaces.md, Artifacts).

The classifier is stored whole ([C, E], merged from every rank's shard) and so is its optimizer state
(momentum rows gathered the same way), so a checkpoint does not depend on the world size it was written
with. RNG states are per rank. The training loop's hooks add their own states (`hook_states`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from topofr_cli.artifacts.checkpoint import Checkpoint
from topofr_cli.config import Recipe
from topofr_cli.engine.distributed import DistContext, gather_objects, gather_rows
from topofr_cli.engine.objective import Objective
from topofr_cli.engine.rng import capture_rng_state, restore_rng_state
from topofr_cli.models.partial_fc import PartialFC, shard_bounds


@dataclass
class TrainingParts:
    backbone: nn.Module  # the plain module (not DDP, not compiled)
    classifier: PartialFC
    objective: Objective  # owns TopoFR's latent scale λ, if any
    backbone_optimizer: torch.optim.Optimizer
    classifier_optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None  # fp16 only; the step uses this one (engine/build.py)


def _shard_sizes(classifier: PartialFC) -> list[int]:
    return [
        shard_bounds(classifier.num_classes, classifier.world_size, r)[1]
        for r in range(classifier.world_size)
    ]


def _is_shard_tensor(value: Any, classifier: PartialFC) -> bool:
    return isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(classifier.weight.shape)


def gather_classifier_optimizer(ctx: DistContext, parts: TrainingParts) -> dict[str, Any]:
    """The classifier optimizer's state with every per-row tensor merged to [C, E] (a collective)."""
    state = parts.classifier_optimizer.state_dict()
    sizes = _shard_sizes(parts.classifier)
    merged: dict[int, dict[str, Any]] = {}
    for index, entry in sorted(state["state"].items()):
        merged[index] = {
            key: gather_rows(ctx, value.detach(), sizes).cpu()
            if _is_shard_tensor(value, parts.classifier)
            else (value.cpu() if isinstance(value, torch.Tensor) else value)
            for key, value in entry.items()
        }
    return {"state": merged, "param_groups": state["param_groups"]}


def shard_classifier_optimizer(state: dict[str, Any], classifier: PartialFC) -> dict[str, Any]:
    start, size = classifier.class_start, classifier.num_local
    full_shape = (classifier.num_classes, classifier.embedding_size)
    sharded = {
        index: {
            key: value[start : start + size].clone()
            if isinstance(value, torch.Tensor) and tuple(value.shape) == full_shape
            else value
            for key, value in entry.items()
        }
        for index, entry in state["state"].items()
    }
    return {"state": sharded, "param_groups": state["param_groups"]}


def build_checkpoint(
    ctx: DistContext,
    recipe: Recipe,
    parts: TrainingParts,
    *,
    num_classes: int,
    step: int,
    epoch: int,
    hook_states: dict[str, Any],
) -> Checkpoint | None:
    """Call on every rank (collectives); returns the checkpoint on rank 0, None elsewhere.

    `epoch` is the epoch of the next batch, as `hook_states["loop"]` records it."""
    classifier_weight = parts.classifier.full_weight().float().cpu()
    classifier_optimizer = gather_classifier_optimizer(ctx, parts)
    rng_states = gather_objects(ctx, capture_rng_state())
    if not ctx.is_main:
        return None
    return Checkpoint(
        network=recipe.model.network,
        embedding_size=recipe.model.embedding_size,
        num_classes=num_classes,
        backbone={k: v.detach().cpu() for k, v in parts.backbone.state_dict().items()},
        classifier=classifier_weight,
        step=step,
        epoch=epoch,
        recipe=recipe,
        # λ exactly, as the parameter (a float does not survive exp/log round trips bit for bit)
        objective={k: v.detach().cpu() for k, v in parts.objective.state_dict().items()},
        training={
            "backbone_optimizer": parts.backbone_optimizer.state_dict(),
            "classifier_optimizer": classifier_optimizer,
            "scaler": None if parts.scaler is None else parts.scaler.state_dict(),
            "world_size": ctx.world_size,
            "rng": rng_states,
            "hooks": hook_states,
        },
    )


def restore_parts(checkpoint: Checkpoint, parts: TrainingParts) -> None:
    """Weights, objective state, optimizers and (when the parts have one) the gradient scaler."""
    parts.backbone.load_state_dict(checkpoint.backbone)
    parts.classifier.load_full_weight(checkpoint.classifier.to(parts.classifier.weight.device))
    if checkpoint.objective:
        parts.objective.load_state_dict(checkpoint.objective)
    training = checkpoint.training
    parts.backbone_optimizer.load_state_dict(training["backbone_optimizer"])
    parts.classifier_optimizer.load_state_dict(
        shard_classifier_optimizer(training["classifier_optimizer"], parts.classifier)
    )
    restore_scaler(checkpoint, parts.scaler)


def restore_scaler(checkpoint: Checkpoint, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None and checkpoint.training.get("scaler"):
        scaler.load_state_dict(checkpoint.training["scaler"])


def restore_rng_for_rank(checkpoint: Checkpoint, ctx: DistContext) -> bool:
    """Restore this rank's RNG states; False when the checkpoint was written with another world size."""
    states = checkpoint.training["rng"]
    if len(states) != ctx.world_size:
        restore_rng_state(states[0])
        return False
    restore_rng_state(states[ctx.rank])
    return True
