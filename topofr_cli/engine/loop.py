"""The training loop: batches in, one `TrainStep` each, hooks around it (engine/hooks.py).

The loop itself owns only where it is (step, epoch, batch within the epoch) and the one stop
condition (`finished`); everything else a run does on the side is a hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import torch

from topofr_cli.artifacts.checkpoint import Checkpoint
from topofr_cli.artifacts.run_dir import MetricsLog
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.hooks import Hook
from topofr_cli.engine.progress import TrainProgress
from topofr_cli.engine.schedule import PolySchedule
from topofr_cli.engine.state import TrainingParts, restore_rng_for_rank
from topofr_cli.engine.step import StepResult, TrainStep
from topofr_cli.progress import SILENT, Progress


@dataclass(kw_only=True)
class LoopSetup:
    """What the loop runs: the step, its data and schedule, and where to stop."""

    ctx: DistContext
    parts: TrainingParts
    step_fn: TrainStep
    loader: Any  # DataLoader over a sampler with set_epoch / set_start_batch
    schedule: PolySchedule
    metrics: MetricsLog | None  # rank 0's metrics.csv; None on the other ranks
    steps_per_epoch: int
    stop_step: int
    epochs: int


@dataclass
class TrainLoop:
    setup: LoopSetup
    hooks: list[Hook]
    _: KW_ONLY
    step: int = 0  # optimizer steps taken (global)
    epoch: int = 0  # epoch of the current batch
    batch_in_epoch: int = 0  # batches of `epoch` consumed
    _: KW_ONLY  # at most six fields by position
    result: StepResult | None = None  # the last step's
    lr: float = 0.0
    started_at: float = 0.0
    reporter: Progress = SILENT  # where rank 0 reports (topofr_cli.progress)
    progress: Any = None  # the training bar while `run` runs
    resume_from: Checkpoint | None = field(default=None, repr=False)  # its RNG is restored in `_batches`
    log_path: Path | None = None  # RUN/train.log: every line rank 0 reports is appended there too
    banner: list[str] = field(default_factory=list)  # the first lines a run reports (engine.train_log)
    summary: Callable[[TrainLoop], str] | None = None  # its last line, once the hooks are done

    # -- what hooks read --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.setup.ctx.device

    @property
    def backbone(self) -> torch.nn.Module:
        return self.setup.parts.backbone

    @property
    def metrics(self) -> MetricsLog | None:
        return self.setup.metrics

    def hook(self, name: str) -> Any:
        """The hook called `name` (`Hook.name`: "metrics", "stopping", "checkpoint", "verification", …)."""
        for hook in self.hooks:
            if hook.name == name:
                return hook
        raise KeyError(f"no hook named {name!r} (hooks: {', '.join(h.name for h in self.hooks)})")

    @property
    def step_epoch(self) -> int:
        """The 0-based epoch the last step's batch came from: `(step - 1) // steps_per_epoch`.

        Every metrics.csv row (training and verification alike) uses this convention, whether it is
        written before or after the loop moves on to the next epoch."""
        return max(self.step - 1, 0) // self.setup.steps_per_epoch

    @property
    def epoch_done(self) -> bool:
        return self.batch_in_epoch >= self.setup.steps_per_epoch

    @property
    def finished(self) -> bool:
        """The stop condition, tested here only."""
        return self.step >= self.setup.stop_step or self.epoch >= self.setup.epochs

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from, and every hook's state (the checkpoint's `training.hooks`)."""
        done = self.epoch_done
        states = {
            "loop": {
                "step": self.step,
                "epoch": self.epoch + 1 if done else self.epoch,
                "batch_in_epoch": 0 if done else self.batch_in_epoch,
            }
        }
        for hook in self.hooks:  # hooks that keep no state add no entry
            state = hook.state_dict()
            if state:
                states[hook.name] = state
        return states

    def load_state_dict(self, checkpoint: Checkpoint) -> None:
        position = checkpoint.hook_state("loop")
        self.step, self.epoch = int(position["step"]), int(position["epoch"])
        self.batch_in_epoch = int(position["batch_in_epoch"])
        for hook in self.hooks:
            state = checkpoint.hook_state(hook.name)
            if state is not None:
                hook.load_state_dict(state)
        self.resume_from = checkpoint

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        with TrainProgress(
            total_steps=self.setup.stop_step,
            start_step=self.step,
            enabled=self.setup.ctx.is_main,
            progress=self.reporter,
            log_path=self.log_path,
        ) as self.progress:
            for line in self.banner:
                self.progress.print(line)
            self._each(lambda hook: hook.before_train(self))
            self.started_at = time.perf_counter()
            while not self.finished:
                for images, labels in self._batches():
                    self._train_step(images, labels)
                    self._each(lambda hook: hook.after_step(self))
                    if self.epoch_done or self.finished:
                        break
                if self.epoch_done:
                    self._each(lambda hook: hook.after_epoch(self))
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._each(lambda hook: hook.after_train(self))
            if self.summary is not None:
                self.progress.print(self.summary(self))

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        parts = self.setup.parts
        self.lr = self.setup.schedule.apply(parts.backbone_optimizer, self.step)
        self.setup.schedule.apply(parts.classifier_optimizer, self.step)
        self.result = self.setup.step_fn(images, labels, self.step)
        self.step += 1
        self.batch_in_epoch += 1

    def _batches(self) -> Any:
        """This epoch's batches from `batch_in_epoch` on; a resume restores the RNG at the right moment."""
        sampler = self.setup.loader.sampler
        sampler.set_epoch(self.epoch)
        sampler.set_start_batch(self.batch_in_epoch)
        # Creating a DataLoader iterator draws from the global torch RNG. The uninterrupted run drew it at
        # the epoch start, before the state a mid-epoch checkpoint recorded: so restore the state before
        # the iterator at an epoch boundary and after it mid-epoch.
        if self.batch_in_epoch == 0:
            self._restore_rng()
        batches = iter(self.setup.loader)
        self._restore_rng()
        return batches

    def _restore_rng(self) -> None:
        if self.resume_from is None:
            return
        if not restore_rng_for_rank(self.resume_from, self.setup.ctx):
            self.progress.note("checkpoint written with another world size; RNG streams differ")
        self.resume_from = None

    def _each(self, call: Callable[[Hook], None]) -> None:
        for hook in self.hooks:  # in list order: metrics row, bad-step check, checkpoint, verification
            call(hook)
