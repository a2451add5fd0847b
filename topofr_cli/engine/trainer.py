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

import torch

from topofr_cli.artifacts.outputs import RUN, check_output
from topofr_cli.artifacts.run_lock import RunLock
from topofr_cli.config import Recipe
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.engine import distributed as D
from topofr_cli.engine import finetune, train_log
from topofr_cli.engine.build import TrainingSetup, build
from topofr_cli.engine.hooks import BadStepGuard, CheckpointHook, Hook, MetricsHook, VerificationHook
from topofr_cli.engine.init_weights import InitWeights, plan_init
from topofr_cli.engine.loop import LoopSetup, TrainLoop
from topofr_cli.engine.objective import Objective
from topofr_cli.engine.preflight import RunPlan, dataset_class_count, plan_run
from topofr_cli.engine.state import build_checkpoint
from topofr_cli.engine.validation import BinScore, verification_bins
from topofr_cli.errors import PreflightError, TopofrError
from topofr_cli.progress import Progress, resolve_progress


@dataclass(kw_only=True)
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
    finished_before: str | None = None  # --resume on a finished run: why nothing was done


def _prepare_data(plan: RunPlan, ctx: D.DistContext, progress: Progress) -> tuple[FaceDataset, bool]:
    """Generate the synthetic set on rank 0 when it is missing, then open the dataset on every rank."""
    from topofr_cli.data import open_dataset

    generated = False
    if plan.generate_data and ctx.is_main:
        from topofr_cli.data.synthetic import generate_synthetic
        from topofr_cli.evaluation.baseline import pixel_baseline

        spec = plan.recipe.data.synthetic
        generate_synthetic(
            plan.data_path,
            identities=spec.identities,
            images_per_identity=spec.images_per_identity,
            heldout_identities=spec.heldout_identities,
            pairs=spec.pairs,
            seed=spec.seed,
            progress=progress,
            baseline=pixel_baseline,
        )
        generated = True
    D.barrier(ctx)
    dataset = open_dataset(plan.data_path)
    return dataset, generated


def _log_columns(objective: Objective, bins: list[Path]) -> list[str]:
    columns = ["epoch", "loss", "lr", "img_per_s", "grad_norm", "bad_steps"]
    columns += list(objective.term_names)
    columns += [f"val_{p.stem}_acc" for p in bins] + [f"val_{p.stem}_std" for p in bins]
    return columns


def train(
    recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress: Progress | bool | None = None
) -> RunResult:
    """Run (or resume) the training the recipe describes; see the module docstring.

    `progress`: where rank 0 reports (see `topofr_cli.progress.resolve_progress`)."""
    started = time.perf_counter()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    ctx = D.setup_distributed(recipe.train.device)
    try:
        return _train(
            recipe,
            ctx,
            resume=resume,
            overwrite=overwrite,
            started=started,
            progress=resolve_progress(progress),
        )
    finally:
        D.teardown_distributed(ctx)


def _set_determinism(recipe: Recipe) -> None:
    if recipe.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _train(
    recipe: Recipe, ctx: D.DistContext, *, resume: bool, overwrite: bool, started: float, progress: Progress
) -> RunResult:
    try:
        init = plan_init(recipe, resume=resume)  # fine-tuning: train.init checked and read, nothing written
        recipe = init.recipe  # with train.init_sha256 recorded
        plan = plan_run(recipe, resume=resume, overwrite=overwrite, check_lock=ctx.is_main)
        plan.notes += init.notes
    except TopofrError as exc:  # the same on every rank: said once (cli.common.user_errors)
        raise PreflightError(str(exc)) from None
    if plan.finished:  # nothing to train: no file is touched, no verification is repeated
        return RunResult(
            run_dir=plan.run.root,
            steps=plan.resume_from.step or 0,
            epochs_completed=plan.resume_from.epoch or 0,
            checkpoint=plan.resume_from.path,
            rank=ctx.rank,
            finished_before=plan.finished_message(),
        )
    lock = _claim_run_dir(plan) if ctx.is_main else None  # only rank 0 writes the folder, only it locks it
    loop: TrainLoop | None = None
    try:
        D.barrier(ctx)  # every rank has checked the run dir before rank 0 clears it for --overwrite
        if ctx.is_main:
            for note in plan.notes:
                progress.message("note", note)
            plan.run.prepare(recipe, overwrite=plan.overwrite and plan.resume_from is None)
        dataset, generated = _prepare_data(plan, ctx, progress)
        loop = _build_loop(recipe, ctx, plan, dataset, progress, init.weights)
        try:
            loop.run()
        finally:
            if loop.setup.metrics is not None:
                loop.setup.metrics.close()
    except BaseException:
        if lock is not None and plan.resume_from is None and (loop is None or loop.step == 0):
            plan.run.clear()  # a start that failed before its first step leaves nothing to resume
            lock.release(remove_empty_root=True)
        raise
    finally:
        if lock is not None:
            lock.release()
    return _result(loop, plan, ctx, generated=generated, started=started)


def _claim_run_dir(plan: RunPlan) -> RunLock:
    """(Rank 0) lock the run folder, then re-check what plan_run saw, now that nobody else can change it."""
    lock = RunLock.acquire(plan.run.root)
    if plan.resume_from is None and not plan.overwrite and not plan.run.is_empty():
        lock.release()
        check_output(plan.run.root, RUN)  # raises: another run filled it since plan_run looked
    plan.run.remove_stale_temporaries()  # the lock holder is the only writer: these are a dead one's
    return lock


def _build_loop(
    recipe: Recipe,
    ctx: D.DistContext,
    plan: RunPlan,
    dataset: FaceDataset,
    progress: Progress,
    init: InitWeights | None = None,
) -> TrainLoop:
    num_classes = dataset_class_count(recipe, dataset)
    bins = verification_bins(recipe.data.val_bins, Path(dataset.path), dataset.meta)
    _set_determinism(recipe)
    checkpoint = plan.resume_from
    training = build(recipe, ctx, num_classes=num_classes, resume_from=checkpoint, init=init)
    setup = _loop_setup(training, dataset, plan, bins)
    if ctx.is_main:
        for note in (setup.loader.note, single_identity_note(dataset, num_classes)):
            if note:
                progress.message("note", note)
    banner = train_log.banner(
        recipe=recipe,
        run_dir=plan.run.root,
        resumed_step=None if checkpoint is None else checkpoint.step,
        data_path=dataset.path,
        images=len(dataset),
        classes=num_classes,
        world_size=ctx.world_size,
        device=ctx.device,
        global_batch=recipe.data.batch_size * ctx.world_size,
        total_steps=setup.stop_step,
        steps_per_epoch=setup.steps_per_epoch,
    ) + finetune.banner_lines(recipe, init)  # fine-tuning
    loop = TrainLoop(
        setup,
        _hooks(recipe, ctx, setup, plan, bins, num_classes),
        reporter=progress,
        log_path=plan.run.log,
        banner=banner,
        summary=_summary_line,
    )
    if checkpoint is not None:
        loop.load_state_dict(checkpoint)
    return loop


def single_identity_note(dataset: FaceDataset, num_classes: int) -> str | None:
    """One identity gives the classifier one answer: the loss falls to 0 without learning a face."""
    if num_classes > 1:
        return None
    return (
        f"warning: {dataset.path}: {num_classes} identity; a face model learns to tell identities "
        "apart, so training on one teaches it nothing (the loss goes to 0 whatever the embeddings)"
    )


def _loop_setup(training: TrainingSetup, dataset: FaceDataset, plan: RunPlan, bins: list[Path]) -> LoopSetup:
    from topofr_cli.data.loader import make_train_loader

    recipe, ctx = training.recipe, training.ctx
    loader = make_train_loader(
        dataset,
        recipe.data.batch_size,
        num_workers=recipe.data.num_workers,
        seed=recipe.train.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        drop_last=True,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise TopofrError(
            f"{dataset.path}: {len(dataset)} images give no full batch of "
            f"{recipe.data.batch_size} × {ctx.world_size} processes (lower data.batch_size)"
        )
    resume_step = None if plan.resume_from is None else plan.resume_from.step
    columns = _log_columns(training.parts.objective, bins)
    return LoopSetup(
        ctx=ctx,
        parts=training.parts,
        step_fn=training.step,
        loader=loader,
        schedule=training.schedule(steps_per_epoch),
        metrics=plan.run.open_metrics(columns, resume_step=resume_step) if ctx.is_main else None,
        steps_per_epoch=steps_per_epoch,
        epochs=recipe.schedule.epochs,
        stop_step=training.stop_step(steps_per_epoch),
    )


def _hooks(
    recipe: Recipe, ctx: D.DistContext, setup: LoopSetup, plan: RunPlan, bins: list[Path], num_classes: int
) -> list[Hook]:
    def save(loop: TrainLoop) -> Path | None:
        states = loop.state_dict()
        checkpoint = build_checkpoint(
            ctx,
            recipe,
            setup.parts,
            num_classes=num_classes,
            step=loop.step,
            epoch=states["loop"]["epoch"],
            hook_states=states,
        )
        path = None if checkpoint is None else checkpoint.write(plan.run.checkpoint(loop.step))
        D.barrier(ctx)
        return path

    train = recipe.train
    return [  # in this order (each hook's `name` is how the summary and the result find it)
        MetricsHook(setup.metrics, train.log_every, recipe.data.batch_size * ctx.world_size),
        BadStepGuard(train.max_bad_steps, train.log_every, plan.run.root),
        CheckpointHook(save, train.save_every, fresh=plan.resume_from is None),
        VerificationHook(bins, train.eval_every, train.eval_at_epoch_end, ctx),
    ]


def _summary_line(loop: TrainLoop) -> str:
    metrics, checkpointer, verification = (loop.hook(n) for n in ("metrics", "checkpoint", "verification"))
    scores = ", ".join(
        f"{s.name} {100 * s.accuracy:.2f}% ± {100 * s.accuracy_std:.2f}" for s in verification.scores
    )
    return train_log.summary(
        steps=loop.step,
        seconds=time.perf_counter() - loop.started_at,
        images_per_second=metrics.images_per_second(),
        bad_steps=metrics.bad_steps,
        checkpoint=checkpointer.last.name if checkpointer.last else None,
        verification=f"verification at step {verification.scored_at}: {scores}" if scores else "",
        memory=train_log.peak_memory(loop.device),
    )


def _result(
    loop: TrainLoop, plan: RunPlan, ctx: D.DistContext, *, generated: bool, started: float
) -> RunResult:
    metrics, checkpointer, verification = (loop.hook(n) for n in ("metrics", "checkpoint", "verification"))
    result = RunResult(
        run_dir=plan.run.root,
        steps=loop.step,
        epochs_completed=loop.epoch,
        checkpoint=checkpointer.last,
        verification=verification.scores,
        bad_steps=metrics.bad_steps,
        images_per_second=metrics.images_per_second(),
        generated_data=generated,
        rank=ctx.rank,
    )
    result.wall_seconds = time.perf_counter() - started
    return result
