"""`train(recipe)`: build the model, data and optimizers, run the loop, checkpoint, verify.

Layout of a run directory (docs/interfaces.md): recipe.yaml, metrics.csv, checkpoints/step_XXXXXXXX.pt,
tensorboard/. The backbone is wrapped in DDP; the Partial FC classifier stays outside (its shards are
rank-local), with its own optimizer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from topofr_cli.config import Recipe
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.engine import distributed as D
from topofr_cli.engine.checkpoint import checkpoint_path, save_checkpoint
from topofr_cli.engine.metrics import MetricsLog
from topofr_cli.engine.objective import build_objective
from topofr_cli.engine.preflight import RunPlan, dataset_class_count, plan_run, prepare_run_dir
from topofr_cli.engine.progress import TrainProgress
from topofr_cli.engine.schedule import PolySchedule
from topofr_cli.engine.state import (
    LoopPosition,
    TrainingParts,
    build_checkpoint,
    restore_rng_for_rank,
    restore_training,
)
from topofr_cli.engine.step import TrainStep
from topofr_cli.engine.validation import BinScore, verification_bins, verify
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress

EVAL_BATCH_SIZE = 64


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    epochs_completed: int
    checkpoint: Path | None
    verification: list[BinScore] = field(default_factory=list)
    bad_steps: int = 0
    wall_seconds: float = 0.0
    images_per_second: float = 0.0
    generated_data: bool = False
    rank: int = 0  # verification results are filled on rank 0 only


def _make_optimizer(recipe: Recipe, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    opt = recipe.optim
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                               fused=True)
    return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay, fused=True)


def _build_parts(recipe: Recipe, num_classes: int, ctx: D.DistContext, objective: nn.Module) -> TrainingParts:
    from topofr_cli.models import CombinedMarginHead, PartialFC, create_backbone

    torch.manual_seed(recipe.train.seed)  # identical backbone on every rank (DDP also broadcasts it)
    backbone = create_backbone(recipe.model.network, recipe.model.embedding_size,
                               dropout=recipe.model.dropout,
                               gradient_checkpointing=recipe.model.gradient_checkpointing)
    backbone = backbone.to(ctx.device)
    if recipe.model.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    h = recipe.head
    classifier = PartialFC(recipe.model.embedding_size, num_classes,
                           CombinedMarginHead(h.scale, h.m1, h.m2, h.m3), sample_rate=h.sample_rate)
    classifier = classifier.to(ctx.device)
    objective.to(ctx.device)
    groups: list[dict[str, Any]] = [{"params": list(backbone.parameters())}]
    extra = [p for p in objective.parameters() if p.requires_grad]
    if extra:  # TopoFR's latent scale λ: optimised with the backbone, never weight-decayed, slower
        groups.append({"params": extra, "weight_decay": 0.0,
                       "lr_multiplier": recipe.topofr.ptsa.scale_lr_multiplier})
    backbone_optimizer = _make_optimizer(recipe, groups)
    classifier_optimizer = _make_optimizer(recipe, [{"params": [classifier.weight]}])
    return TrainingParts(backbone, classifier, objective, backbone_optimizer, classifier_optimizer, None)


def _wrap_backbone(recipe: Recipe, backbone: nn.Module, ctx: D.DistContext) -> nn.Module:
    model = backbone
    if ctx.distributed:
        model = DistributedDataParallel(backbone, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                        gradient_as_bucket_view=True)
        model.register_comm_hook(None, D.sum_gradients_hook)
    if recipe.train.compile:
        model = torch.compile(model)
    return model


def _prepare_data(plan: RunPlan, ctx: D.DistContext, progress: Progress) -> tuple[FaceDataset, bool]:
    """Generate the synthetic set on rank 0 when it is missing, then open the dataset on every rank."""
    from topofr_cli.data import open_dataset

    generated = False
    if plan.generate_data and ctx.is_main:
        from topofr_cli.data.synthetic import generate_synthetic
        from topofr_cli.evaluation.baseline import pixel_baseline

        spec = plan.recipe.data.synthetic
        generate_synthetic(plan.data_path, identities=spec.identities,
                           images_per_identity=spec.images_per_identity,
                           heldout_identities=spec.heldout_identities, pairs=spec.pairs, seed=spec.seed,
                           progress=progress, baseline=pixel_baseline)
        generated = True
    D.barrier(ctx)
    dataset = open_dataset(plan.data_path)
    return dataset, generated


def _log_columns(objective: nn.Module, bins: list[Path]) -> list[str]:
    columns = ["epoch", "loss", "lr", "img_per_s", "grad_norm", "bad_steps"]
    columns += list(objective.term_names)
    columns += [f"val_{p.stem}_acc" for p in bins] + [f"val_{p.stem}_std" for p in bins]
    return columns


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
          progress: Progress | bool | None = None) -> RunResult:
    """Run (or resume) the training the recipe describes; see the module docstring.

    `progress`: where rank 0 reports (see `topofr_cli.progress.resolve_progress`)."""
    started = time.perf_counter()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    ctx = D.setup_distributed(recipe.train.device)
    try:
        return _train(recipe, ctx, resume=resume, overwrite=overwrite, started=started,
                      progress=resolve_progress(progress))
    finally:
        D.teardown_distributed(ctx)


def _train(recipe: Recipe, ctx: D.DistContext, *, resume: bool, overwrite: bool, started: float,
           progress: Progress) -> RunResult:
    plan = plan_run(recipe, resume=resume, overwrite=overwrite)
    D.barrier(ctx)  # every rank has checked the run dir before rank 0 clears it for --overwrite
    if ctx.is_main:
        prepare_run_dir(plan)
    dataset, generated = _prepare_data(plan, ctx, progress)
    num_classes = dataset_class_count(recipe, dataset)
    bins = verification_bins(recipe.data.val_bins, Path(dataset.path), dataset.meta)

    if recipe.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True

    objective = build_objective(recipe, ctx)
    parts = _build_parts(recipe, num_classes, ctx, objective)
    payload = plan.resume_payload
    position = restore_training(payload, parts, ctx) if payload is not None else LoopPosition()
    torch.manual_seed(recipe.train.seed + ctx.rank)  # per-rank streams (dropout, class sampling)

    model = _wrap_backbone(recipe, parts.backbone, ctx)
    step_fn = TrainStep(backbone=model, backbone_params=list(parts.backbone.parameters()),
                        classifier=parts.classifier, objective=objective,
                        optimizers=[parts.backbone_optimizer, parts.classifier_optimizer],
                        precision=recipe.train.precision, dist_ctx=ctx,
                        clip_grad_norm=recipe.optim.clip_grad_norm, channels_last=recipe.model.channels_last,
                        horizontal_flip=recipe.data.horizontal_flip, seed=recipe.train.seed)
    parts.scaler = step_fn.scaler
    if payload is not None and parts.scaler is not None and payload["training"].get("scaler"):
        parts.scaler.load_state_dict(payload["training"]["scaler"])

    from topofr_cli.data.loader import make_train_loader

    loader = make_train_loader(dataset, recipe.data.batch_size, num_workers=recipe.data.num_workers,
                               seed=recipe.train.seed, rank=ctx.rank, world_size=ctx.world_size,
                               drop_last=True)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise TopofrError(f"{dataset.path}: {len(dataset)} images give no full batch of "
                          f"{recipe.data.batch_size} × {ctx.world_size} processes (lower data.batch_size)")
    sched = recipe.schedule
    total_steps = sched.epochs * steps_per_epoch
    schedule = PolySchedule(recipe.optim.lr, total_steps, min(total_steps, round(sched.warmup_epochs
                                                                                  * steps_per_epoch)), sched.power)
    stop_step = total_steps if sched.max_steps is None else min(total_steps, sched.max_steps)
    metrics = MetricsLog(plan.run_dir, _log_columns(objective, bins), enabled=ctx.is_main,
                         resume_step=position.step if payload is not None else None)
    loop = _Loop(recipe, ctx, parts, model, step_fn, loader, schedule, metrics, bins, num_classes,
                 steps_per_epoch, stop_step, plan.run_dir, progress=progress)
    try:
        result = loop.run(position, payload)
    finally:
        metrics.close()
    result.generated_data = generated
    result.rank = ctx.rank
    result.wall_seconds = time.perf_counter() - started
    return result


class _Loop:
    """The epoch/step loop with its side duties (logging, checkpoints, verification, bad-step policy)."""

    def __init__(self, recipe, ctx, parts, model, step_fn, loader, schedule, metrics, bins, num_classes,
                 steps_per_epoch, stop_step, run_dir, *, progress: Progress) -> None:
        self.recipe, self.ctx, self.parts, self.model, self.step_fn = recipe, ctx, parts, model, step_fn
        self.loader, self.schedule, self.metrics, self.bins = loader, schedule, metrics, bins
        self.num_classes, self.steps_per_epoch, self.stop_step = num_classes, steps_per_epoch, stop_step
        self.run_dir, self.progress = run_dir, progress
        self.global_batch = recipe.data.batch_size * ctx.world_size
        self.last_checkpoint: Path | None = None
        self.scores: list[BinScore] = []
        self.scored_at = -1

    def save(self, position: LoopPosition) -> None:
        payload = build_checkpoint(self.ctx, self.recipe, self.parts, position, self.num_classes)
        if payload is not None:
            self.last_checkpoint = save_checkpoint(payload, checkpoint_path(self.run_dir, position.step))
        D.barrier(self.ctx)

    def evaluate(self, step: int, epoch: int, progress: TrainProgress) -> None:
        if not self.bins:
            return
        if self.ctx.is_main:
            self.scores = verify(self.parts.backbone, self.bins, device=self.ctx.device,
                                 batch_size=EVAL_BATCH_SIZE)
            row: dict[str, Any] = {"epoch": epoch}
            for score in self.scores:
                row[f"val_{score.name}_acc"] = score.accuracy
                row[f"val_{score.name}_std"] = score.accuracy_std
            self.metrics.log(step, row)
            progress.print(f"step {step}: " + ", ".join(
                f"{s.name} {100 * s.accuracy:.2f}% ± {100 * s.accuracy_std:.2f}" for s in self.scores))
        self.scored_at = step
        D.barrier(self.ctx)

    def run(self, position: LoopPosition, payload: dict[str, Any] | None) -> RunResult:
        device = self.ctx.device
        consecutive = torch.tensor(float(position.consecutive_bad), device=device)
        worst = consecutive.clone()
        bad_total = torch.tensor(float(position.bad_steps), device=device)
        train_cfg = self.recipe.train
        sampler = self.loader.sampler
        rng_pending = payload is not None
        epochs = self.recipe.schedule.epochs
        step = position.step
        last_log_time, last_log_step = time.perf_counter(), step
        speeds: list[float] = []
        with TrainProgress(total_steps=self.stop_step, start_step=step, enabled=self.ctx.is_main,
                           progress=self.progress) as progress:
            epoch = position.epoch
            while epoch < epochs and step < self.stop_step:
                start_batch = position.batch_in_epoch if epoch == position.epoch else 0
                sampler.set_epoch(epoch)
                sampler.set_start_batch(start_batch)
                # Creating a DataLoader iterator draws from the global torch RNG. The uninterrupted run
                # drew it at the epoch start, before the state a mid-epoch checkpoint recorded: so restore
                # the state before the iterator at an epoch boundary and after it mid-epoch.
                if rng_pending and start_batch == 0:
                    self._restore_rng(payload, progress)
                    rng_pending = False
                batches = iter(self.loader)
                if rng_pending:
                    self._restore_rng(payload, progress)
                    rng_pending = False
                batch_in_epoch = start_batch
                for images, labels in batches:
                    lr = self.schedule.apply(self.parts.backbone_optimizer, step)
                    self.schedule.apply(self.parts.classifier_optimizer, step)
                    result = self.step_fn(images, labels, step)
                    step += 1
                    batch_in_epoch += 1
                    consecutive.add_(1).mul_(result.bad)
                    torch.maximum(worst, consecutive, out=worst)
                    bad_total.add_(result.bad)
                    progress.advance()
                    at_end = step >= self.stop_step or batch_in_epoch >= self.steps_per_epoch
                    if step % train_cfg.log_every == 0 or at_end:
                        now = time.perf_counter()
                        speed = (step - last_log_step) * self.global_batch / max(now - last_log_time, 1e-9)
                        speeds.append(speed)
                        last_log_time, last_log_step = now, step
                        self._log(step, epoch, lr, speed, result, bad_total, progress)
                        if int(worst.item()) >= train_cfg.max_bad_steps:
                            raise TopofrError(
                                f"{self.run_dir}: the loss was not finite for {train_cfg.max_bad_steps} "
                                f"consecutive steps (by step {step}); lower optim.lr, raise "
                                "optim.clip_grad_norm's strictness or use train.precision fp32/bf16")
                    epoch_done = batch_in_epoch >= self.steps_per_epoch
                    periodic_save = train_cfg.save_every > 0 and step % train_cfg.save_every == 0
                    if epoch_done or step >= self.stop_step or periodic_save:
                        self.save(LoopPosition(step, epoch + 1 if epoch_done else epoch,
                                               0 if epoch_done else batch_in_epoch,
                                               int(bad_total.item()), int(consecutive.item())))
                    if (epoch_done and train_cfg.eval_at_epoch_end) or (
                            train_cfg.eval_every and step % train_cfg.eval_every == 0):
                        self.evaluate(step, epoch, progress)
                    if epoch_done or step >= self.stop_step:
                        break
                epoch += 1 if batch_in_epoch >= self.steps_per_epoch else 0
                if step >= self.stop_step:
                    break
            if self.scored_at != step:
                self.evaluate(step, epoch, progress)
        return RunResult(run_dir=self.run_dir, steps=step, epochs_completed=epoch, checkpoint=self.last_checkpoint,
                         verification=self.scores, bad_steps=int(bad_total.item()),
                         images_per_second=sum(speeds[1:]) / len(speeds[1:]) if len(speeds) > 1 else
                         (speeds[0] if speeds else 0.0))

    def _restore_rng(self, payload: dict[str, Any], progress: TrainProgress) -> None:
        if not restore_rng_for_rank(payload, self.ctx):
            progress.note("checkpoint written with another world size; RNG streams differ")

    def _log(self, step: int, epoch: int, lr: float, speed: float, result: Any, bad_total: torch.Tensor,
             progress: TrainProgress) -> None:
        loss = float(result.loss.item())
        row: dict[str, Any] = {"epoch": epoch, "loss": loss, "lr": lr, "img_per_s": speed,
                               "grad_norm": float(result.grad_norm.item()), "bad_steps": int(bad_total.item())}
        row.update({name: float(value.item()) for name, value in result.terms.items()})
        self.metrics.log(step, row)
        progress.show(epoch=epoch, loss=loss, lr=lr, images_per_second=speed)
