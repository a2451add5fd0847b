"""The training step as `topofr train` runs it on one device, built for measurement.

Backbone channels-last, Partial FC classifier with the ArcFace head, fused SGD, autocast, the
sync-free TrainStep (engine/step.py); the objective is plain ArcFace or TopoFR (RSP + PTSA + SDE).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel

from topofr_cli.bench.timing import synchronize
from topofr_cli.config import TopoFRConfig
from topofr_cli.engine.distributed import DistContext, sum_gradients_hook
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.step import TrainStep
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.models import CombinedMarginHead, PartialFC, create_backbone

EMBEDDING = 512


def ddp_wrap(backbone: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """The backbone in DDP as the trainer wraps it: gradients summed over ranks (Partial FC's global loss)."""
    model = DistributedDataParallel(
        backbone, device_ids=[ctx.device] if ctx.device.type == "cuda" else None, gradient_as_bucket_view=True
    )
    model.register_comm_hook(None, sum_gradients_hook)
    return model


def make_objective(
    kind: Literal["plain", "topofr"], *, sde: bool = True, world_size: int = 1, scope: str = "local"
) -> torch.nn.Module:
    if kind == "plain":
        return PlainObjective()
    config = TopoFRConfig(enabled=True)
    config.sde.enabled = sde
    config.ptsa.scope = scope  # type: ignore[assignment]
    return TopoFRObjective(config, world_size=world_size)


def make_train_step(
    network: str,
    classes: int,
    objective: torch.nn.Module,
    precision: str,
    ctx: DistContext,
    *,
    compile_backbone: bool = False,
    wrap=None,
) -> TrainStep:
    """A fresh model and optimizers (seeded) around TrainStep. `wrap` turns the backbone into what the
    step calls (DDP in the multi-GPU section); torch.compile goes around that, as in the trainer."""
    torch.manual_seed(0)
    device = ctx.device
    backbone = create_backbone(network, EMBEDDING).to(device).to(memory_format=torch.channels_last)
    classifier = PartialFC(EMBEDDING, classes, CombinedMarginHead(64.0, 1.0, 0.5, 0.0)).to(device)
    objective = objective.to(device)
    model = wrap(backbone) if wrap is not None else backbone
    if compile_backbone:
        model = torch.compile(model, dynamic=False)
    optimizers = [
        torch.optim.SGD(
            [*backbone.parameters(), *objective.parameters()],
            lr=0.01,
            momentum=0.9,
            weight_decay=5e-4,
            fused=True,
        ),
        torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True),
    ]
    return TrainStep(
        backbone=model,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=objective,
        optimizers=optimizers,
        precision=precision,
        dist_ctx=ctx,
        clip_grad_norm=5.0,
        channels_last=True,
        horizontal_flip=True,
        seed=0,
    )


def step_times_ms(
    step: Callable[[torch.Tensor, torch.Tensor, int], object],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    warmup: int,
    steps: int,
    time_cap_s: float = float("inf"),
) -> list[float]:
    """Wall time of each timed step (synchronised), after `warmup` untimed ones; stops early past the cap."""
    for i in range(warmup):
        step(images, labels, i)
    synchronize(images.device)
    times: list[float] = []
    started = time.perf_counter()
    for i in range(steps):
        begin = time.perf_counter()
        step(images, labels, warmup + i)
        synchronize(images.device)
        times.append((time.perf_counter() - begin) * 1e3)
        if time.perf_counter() - started > time_cap_s:
            break
    return times


def images_per_second(
    step: Callable[[torch.Tensor, torch.Tensor, int], object],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    warmup: int,
    steps: int,
) -> float:
    """Batch size over the median step time."""
    times = step_times_ms(step, images, labels, warmup=warmup, steps=steps)
    return images.shape[0] * 1e3 / statistics.median(times)
