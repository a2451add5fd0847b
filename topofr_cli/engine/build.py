"""The one way to build a training step from a recipe: model, classifier, objective, optimizers, precision
and the `TrainStep` around them.

`trainer.train`, `topofr bench` and `benchmarks/` all call `build`, so what the bench times is what a
run trains: change the step here and every caller follows. Everything is made in one call, in one order
(objective, parts with their GradScaler, restored state, per-rank seeds, step), so no caller depends on
the order of smaller calls.

Extension points: `parameter_groups` lists the backbone optimizer's groups (one dict per group; an
`lr_multiplier` key scales the schedule's lr for that group, `engine/schedule.py`), and `TrainingSetup`
is what the trainer turns into a loop (`trainer._hooks` lists the hooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from topofr_cli.artifacts.checkpoint import Checkpoint
from topofr_cli.config import Recipe
from topofr_cli.engine import compat, finetune
from topofr_cli.engine import distributed as D
from topofr_cli.engine.init_weights import InitWeights
from topofr_cli.engine.objective import Objective, build_objective
from topofr_cli.engine.rng import seed_everything
from topofr_cli.engine.schedule import PolySchedule
from topofr_cli.engine.state import TrainingParts, restore_parts
from topofr_cli.engine.step import TrainStep, make_scaler


@dataclass(frozen=True)
class TrainingSetup:
    """A ready step and what it updates; `schedule` gives the lr per step once the epoch length is known."""

    recipe: Recipe
    ctx: D.DistContext
    parts: TrainingParts
    step: TrainStep

    def schedule(self, steps_per_epoch: int) -> PolySchedule:
        sched = self.recipe.schedule
        total_steps = sched.epochs * steps_per_epoch
        warmup = min(total_steps, round(sched.warmup_epochs * steps_per_epoch))
        return PolySchedule(self.recipe.optim.lr, total_steps, warmup, sched.power)

    def stop_step(self, steps_per_epoch: int) -> int:
        total_steps = self.recipe.schedule.epochs * steps_per_epoch
        max_steps = self.recipe.schedule.max_steps
        return total_steps if max_steps is None else min(total_steps, max_steps)


def build(
    recipe: Recipe,
    ctx: D.DistContext,
    *,
    num_classes: int,
    resume_from: Checkpoint | None = None,
    init: InitWeights | None = None,
) -> TrainingSetup:
    """The recipe's model, optimizers and step on `ctx.device` (state restored from `resume_from`; a
    fresh start's backbone from `init`, engine.init_weights, with the recipe's fine-tuning knobs).

    Seeds: the weights from `train.seed` (identical on every rank), then every RNG from
    `train.seed + rank` (dropout, class sampling); the step's augmentations are seeded per step."""
    objective = build_objective(recipe, ctx)
    parts = build_parts(recipe, ctx, num_classes=num_classes, objective=objective)
    finetune.prepare_parts(recipe, parts, init if resume_from is None else None)
    if resume_from is not None:
        restore_parts(resume_from, parts)  # weights, optimizers and GradScaler
    seed_everything(recipe.train.seed + ctx.rank)
    step = finetune.wrap_step(recipe, parts.backbone, build_step(recipe, ctx, parts))
    return TrainingSetup(recipe=recipe, ctx=ctx, parts=parts, step=step)


def build_parts(
    recipe: Recipe, ctx: D.DistContext, *, num_classes: int, objective: Objective
) -> TrainingParts:
    from topofr_cli.models import CombinedMarginHead, PartialFC, create_backbone

    torch.manual_seed(recipe.train.seed)  # identical backbone on every rank (DDP also broadcasts it)
    backbone = create_backbone(
        recipe.model.network,
        recipe.model.embedding_size,
        dropout=recipe.model.dropout,
        gradient_checkpointing=recipe.model.gradient_checkpointing,
        **compat.backbone_options(recipe),
    )
    backbone = backbone.to(ctx.device)
    if recipe.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    h = recipe.head
    classifier = PartialFC(
        recipe.model.embedding_size,
        num_classes,
        CombinedMarginHead(h.scale, h.m1, h.m2, h.m3),
        sample_rate=h.sample_rate,
    )
    classifier = classifier.to(ctx.device)
    objective.to(ctx.device)
    backbone_optimizer = make_optimizer(recipe, parameter_groups(recipe, backbone, objective))
    classifier_optimizer = make_optimizer(recipe, [{"params": [classifier.weight]}])
    growth_interval = compat.step_options(recipe)["scaler_growth_interval"]
    scaler = make_scaler(recipe.train.precision, ctx.device, growth_interval=growth_interval)
    return TrainingParts(backbone, classifier, objective, backbone_optimizer, classifier_optimizer, scaler)


def parameter_groups(recipe: Recipe, backbone: nn.Module, objective: Objective) -> list[dict[str, Any]]:
    """The backbone optimizer's groups: the backbone, then TopoFR's latent scale λ (never weight-decayed,
    at `topofr.ptsa.scale_lr_multiplier` times the lr). Each group's starting lr already carries its
    multiplier, so a step taken without the schedule (the bench) uses the same ratio as training."""
    groups: list[dict[str, Any]] = [{"params": list(backbone.parameters())}]
    extra = [p for p in objective.parameters() if p.requires_grad]
    if extra:
        multiplier = recipe.topofr.ptsa.scale_lr_multiplier
        groups.append(
            {
                "params": extra,
                "weight_decay": 0.0,
                "lr": recipe.optim.lr * multiplier,
                "lr_multiplier": multiplier,
            }
        )
    return groups


def make_optimizer(recipe: Recipe, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    opt = recipe.optim
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, fused=True
        )
    return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay, fused=True)


def build_step(recipe: Recipe, ctx: D.DistContext, parts: TrainingParts) -> TrainStep:
    """The step around `parts`: the backbone in DDP when distributed, compiled when the recipe asks."""
    return TrainStep(
        backbone=wrap_backbone(parts.backbone, ctx, compile_model=recipe.train.compile),
        backbone_params=list(parts.backbone.parameters()),
        classifier=parts.classifier,
        objective=parts.objective,
        optimizers=[parts.backbone_optimizer, parts.classifier_optimizer],
        precision=recipe.train.precision,
        scaler=parts.scaler,
        dist_ctx=ctx,
        clip_grad_norm=recipe.optim.clip_grad_norm,
        channels_last=recipe.model.channels_last,
        horizontal_flip=recipe.data.horizontal_flip,
        seed=recipe.train.seed,
        **compat.step_options(recipe),
    )


def wrap_backbone(backbone: nn.Module, ctx: D.DistContext, *, compile_model: bool = False) -> nn.Module:
    """DDP with summed gradients (Partial FC's loss is over the global batch), then torch.compile."""
    model = backbone
    if ctx.distributed:
        model = DistributedDataParallel(
            backbone,
            device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
        model.register_comm_hook(None, D.sum_gradients_hook)
    if compile_model:
        model = torch.compile(model)
    return model
