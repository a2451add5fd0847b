"""Training state ⇄ checkpoint dict (docs/interfaces.md, Engine).

The classifier is stored whole ([C, E], merged from every rank's shard) and so is its optimizer state
(momentum rows gathered the same way), so a checkpoint does not depend on the world size it was written
with. RNG states are per rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from topofr_cli import __version__
from topofr_cli.config import Recipe
from topofr_cli.engine.checkpoint import CHECKPOINT_FORMAT, capture_rng_state, restore_rng_state
from topofr_cli.engine.distributed import DistContext, gather_objects, gather_rows
from topofr_cli.models.partial_fc import PartialFC, shard_bounds


@dataclass
class LoopPosition:
    step: int = 0  # optimizer steps taken (global)
    epoch: int = 0  # epoch of the next batch
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    bad_steps: int = 0  # non-finite losses so far
    consecutive_bad: int = 0


@dataclass
class TrainingParts:
    backbone: nn.Module  # the plain module (not DDP, not compiled)
    classifier: PartialFC
    objective: nn.Module  # owns TopoFR's latent scale λ, if any
    backbone_optimizer: torch.optim.Optimizer
    classifier_optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    extra: dict[str, Any] = field(default_factory=dict)


def _latent_scale(objective: nn.Module) -> float | None:
    value = getattr(objective, "latent_scale_value", None)
    return value() if callable(value) else None


def _shard_sizes(classifier: PartialFC) -> list[int]:
    return [shard_bounds(classifier.num_classes, classifier.world_size, r)[1]
            for r in range(classifier.world_size)]


def _is_shard_tensor(value: Any, classifier: PartialFC) -> bool:
    return isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(classifier.weight.shape)


def gather_classifier_optimizer(ctx: DistContext, parts: TrainingParts) -> dict[str, Any]:
    """The classifier optimizer's state with every per-row tensor merged to [C, E] (a collective)."""
    state = parts.classifier_optimizer.state_dict()
    sizes = _shard_sizes(parts.classifier)
    merged: dict[int, dict[str, Any]] = {}
    for index, entry in sorted(state["state"].items()):
        merged[index] = {
            key: gather_rows(ctx, value.detach(), sizes).cpu() if _is_shard_tensor(value, parts.classifier)
            else (value.cpu() if isinstance(value, torch.Tensor) else value)
            for key, value in entry.items()
        }
    return {"state": merged, "param_groups": state["param_groups"]}


def shard_classifier_optimizer(state: dict[str, Any], classifier: PartialFC) -> dict[str, Any]:
    start, size = classifier.class_start, classifier.num_local
    full_shape = (classifier.num_classes, classifier.embedding_size)
    sharded = {
        index: {key: value[start:start + size].clone()
                if isinstance(value, torch.Tensor) and tuple(value.shape) == full_shape else value
                for key, value in entry.items()}
        for index, entry in state["state"].items()
    }
    return {"state": sharded, "param_groups": state["param_groups"]}


def build_checkpoint(ctx: DistContext, recipe: Recipe, parts: TrainingParts, position: LoopPosition,
                     num_classes: int) -> dict[str, Any] | None:
    """Call on every rank (collectives); returns the payload on rank 0, None elsewhere."""
    classifier_weight = parts.classifier.full_weight().float().cpu()
    classifier_optimizer = gather_classifier_optimizer(ctx, parts)
    rng_states = gather_objects(ctx, capture_rng_state())
    if not ctx.is_main:
        return None
    return {
        "format": CHECKPOINT_FORMAT,
        "topofr_version": __version__,
        "model": {"network": recipe.model.network, "embedding_size": recipe.model.embedding_size,
                  "num_classes": num_classes},
        "recipe": recipe.to_dict(),
        "step": position.step,
        "epoch": position.epoch,
        "backbone": {k: v.detach().cpu() for k, v in parts.backbone.state_dict().items()},
        "classifier": classifier_weight,
        "latent_scale": _latent_scale(parts.objective),
        "training": {
            "position": {"epoch": position.epoch, "batch_in_epoch": position.batch_in_epoch},
            "bad_steps": position.bad_steps,
            "consecutive_bad": position.consecutive_bad,
            "backbone_optimizer": parts.backbone_optimizer.state_dict(),
            "classifier_optimizer": classifier_optimizer,
            "scaler": None if parts.scaler is None else parts.scaler.state_dict(),
            "world_size": ctx.world_size,
            # λ exactly (the top-level `latent_scale` float does not survive exp/log round trips bit for bit)
            "objective": {k: v.detach().cpu() for k, v in parts.objective.state_dict().items()},
            "rng": rng_states,
        },
    }


def restore_weights(payload: dict[str, Any], parts: TrainingParts) -> None:
    parts.backbone.load_state_dict(payload["backbone"])
    parts.classifier.load_full_weight(payload["classifier"].to(parts.classifier.weight.device))
    if hasattr(parts.objective, "load_latent_scale"):
        parts.objective.load_latent_scale(payload.get("latent_scale"))


def restore_training(payload: dict[str, Any], parts: TrainingParts, ctx: DistContext) -> LoopPosition:
    """Weights, optimizers and scaler; returns where the loop continues. RNG is restored separately
    (`restore_rng_for_rank`) because its moment matters (see trainer)."""
    restore_weights(payload, parts)
    training = payload["training"]
    parts.backbone_optimizer.load_state_dict(training["backbone_optimizer"])
    parts.classifier_optimizer.load_state_dict(
        shard_classifier_optimizer(training["classifier_optimizer"], parts.classifier))
    if training.get("objective"):
        parts.objective.load_state_dict(training["objective"])
    if parts.scaler is not None and training.get("scaler"):
        parts.scaler.load_state_dict(training["scaler"])
    return LoopPosition(step=int(payload["step"]), epoch=int(training["position"]["epoch"]),
                        batch_in_epoch=int(training["position"]["batch_in_epoch"]),
                        bad_steps=int(training["bad_steps"]), consecutive_bad=int(training["consecutive_bad"]))


def restore_rng_for_rank(payload: dict[str, Any], ctx: DistContext) -> bool:
    """Restore this rank's RNG states; False when the checkpoint was written with another world size."""
    states = payload["training"]["rng"]
    if len(states) != ctx.world_size:
        restore_rng_state(states[0])
        return False
    restore_rng_state(states[ctx.rank])
    return True
