"""The training loop's side duties, one small hook each (in the spirit of detectron2's hooks).

A hook sees the loop (`TrainLoop`: step, epoch, the last step's result) at four moments and owns the
state it needs across a resume (`state_dict` / `load_state_dict`; the checkpoint stores it under
`training.hooks[<name>]`). They run in list order, which is the order the outputs appear in:
metrics row, bad-step check, checkpoint, verification.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from topofr_cli.artifacts.run_dir import MetricsLog
from topofr_cli.engine import distributed as D
from topofr_cli.engine import train_log
from topofr_cli.engine.validation import BinScore, verify
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.degeneracy import degenerate_message

if TYPE_CHECKING:
    from topofr_cli.engine.loop import TrainLoop

EVAL_BATCH_SIZE = 64


class Hook:
    """Does nothing by default; subclasses override the moments they care about."""

    name = ""  # how the loop finds it (`TrainLoop.hook(name)`) and the key of its state in the checkpoint

    def before_train(self, loop: TrainLoop) -> None: ...

    def after_step(self, loop: TrainLoop) -> None: ...

    def after_epoch(self, loop: TrainLoop) -> None: ...

    def after_train(self, loop: TrainLoop) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}  # empty: nothing to save

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class MetricsHook(Hook):
    """At log steps: a metrics.csv row, the bar's status and a train.log line; counts non-finite steps;
    measures img/s."""

    metrics: MetricsLog | None  # None on ranks other than 0
    log_every: int
    global_batch: int
    name = "metrics"
    bad_total: torch.Tensor | None = field(default=None, init=False)
    speeds: list[float] = field(default_factory=list, init=False)

    def before_train(self, loop: TrainLoop) -> None:
        self.bad_total = (torch.zeros(()) if self.bad_total is None else self.bad_total).to(loop.device)
        self._last_time: float | None = None
        self._last_step = loop.step

    def after_step(self, loop: TrainLoop) -> None:
        if self._last_time is None:  # the clock starts when the first batch does, after every before_train
            self._last_time = loop.started_at
        self.bad_total.add_(loop.result.bad)
        loop.progress.advance()
        if loop.step % self.log_every == 0 or loop.epoch_done or loop.finished:
            now = time.perf_counter()
            speed = (loop.step - self._last_step) * self.global_batch / max(now - self._last_time, 1e-9)
            self.speeds.append(speed)
            self._last_time, self._last_step = now, loop.step
            self._log(loop, speed)

    def _log(self, loop: TrainLoop, speed: float) -> None:
        result = loop.result
        loss = float(result.loss.item())  # the host-device sync of a log step
        row: dict[str, Any] = {
            "epoch": loop.step_epoch,
            "loss": loss,
            "lr": loop.lr,
            "img_per_s": speed,
            "grad_norm": float(result.grad_norm.item()),
            "bad_steps": self.bad_steps,
        }
        terms = {name: float(value.item()) for name, value in result.terms.items()}
        row.update(terms)
        if self.metrics is not None:
            self.metrics.log(loop.step, row)
        loop.progress.show(epoch=loop.step_epoch, loss=loss, lr=loop.lr, images_per_second=speed)
        remaining = (loop.setup.stop_step - loop.step) * self.global_batch / max(speed, 1e-9)
        loop.progress.log(
            train_log.step_line(
                step=loop.step,
                total_steps=loop.setup.stop_step,
                epoch=loop.step_epoch,
                epochs=loop.setup.epochs,
                loss=loss,
                terms=terms,
                lr=loop.lr,
                images_per_second=speed,
                eta_seconds=remaining,
                memory=train_log.peak_memory(loop.device),
            )
        )

    @property
    def bad_steps(self) -> int:
        return int(self.bad_total.item())

    def images_per_second(self) -> float:
        """Mean speed over the log intervals, the first (warm-up, compilation) left out when possible."""
        kept = self.speeds[1:] if len(self.speeds) > 1 else self.speeds
        return sum(kept) / len(kept) if kept else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"bad_steps": self.bad_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_total = torch.tensor(float(state["bad_steps"]))


@dataclass
class BadStepGuard(Hook):
    """Stop the run with one clear error after `max_bad` consecutive bad steps (non-finite loss or update).

    The counters stay on the device; they are read at log steps only (no extra sync)."""

    max_bad: int
    log_every: int
    run_dir: Path
    name = "stopping"
    consecutive: torch.Tensor | None = field(default=None, init=False)

    def before_train(self, loop: TrainLoop) -> None:
        self.consecutive = (torch.zeros(()) if self.consecutive is None else self.consecutive).to(loop.device)
        self.worst = self.consecutive.clone()

    def after_step(self, loop: TrainLoop) -> None:
        self.consecutive.add_(1).mul_(loop.result.bad)
        torch.maximum(self.worst, self.consecutive, out=self.worst)
        log_step = loop.step % self.log_every == 0 or loop.epoch_done or loop.finished
        if log_step and int(self.worst.item()) >= self.max_bad:
            raise TopofrError(
                f"{self.run_dir}: the loss or the update was not finite for {self.max_bad} consecutive steps "
                f"(by step {loop.step}); lower optim.lr, raise optim.clip_grad_norm's strictness or use "
                "train.precision fp32/bf16"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive_bad": int(self.consecutive.item())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive = torch.tensor(float(state["consecutive_bad"]))


@dataclass
class CheckpointHook(Hook):
    """Save at the start of a fresh run (step 0), every `save_every` steps, at epoch ends and at the end."""

    save: Any  # (loop) -> Path | None: writes the checkpoint (a collective), its path on rank 0
    save_every: int
    fresh: bool
    name = "checkpoint"
    last: Path | None = field(default=None, init=False)

    def before_train(self, loop: TrainLoop) -> None:
        if self.fresh:  # the initial model: the first point of every curve over training
            self._save(loop)

    def after_step(self, loop: TrainLoop) -> None:
        periodic = self.save_every > 0 and loop.step % self.save_every == 0
        if loop.epoch_done or loop.finished or periodic:
            self._save(loop)

    def _save(self, loop: TrainLoop) -> None:
        self.last = self.save(loop) or self.last


@dataclass
class VerificationHook(Hook):
    """10-fold accuracy on the verification .bin files: every `every` steps, at epoch ends, at the end."""

    bins: list[Path]
    every: int
    at_epoch_end: bool
    ctx: D.DistContext
    name = "verification"
    scores: list[BinScore] = field(default_factory=list, init=False)
    scored_at: int = field(default=-1, init=False)

    def after_step(self, loop: TrainLoop) -> None:
        if self.every and loop.step % self.every == 0:
            self._evaluate(loop)

    def after_epoch(self, loop: TrainLoop) -> None:
        if self.at_epoch_end and self.scored_at != loop.step:
            self._evaluate(loop)

    def after_train(self, loop: TrainLoop) -> None:
        if self.scored_at != loop.step:
            self._evaluate(loop)

    def _evaluate(self, loop: TrainLoop) -> None:
        if not self.bins:
            return
        if self.ctx.is_main:
            self.scores = verify(loop.backbone, self.bins, device=self.ctx.device, batch_size=EVAL_BATCH_SIZE)
            row: dict[str, Any] = {"epoch": loop.step_epoch}
            for score in self.scores:
                row[f"val_{score.name}_acc"] = score.accuracy
                row[f"val_{score.name}_std"] = score.accuracy_std
            if loop.metrics is not None:
                loop.metrics.log(loop.step, row)
            loop.progress.print(
                f"step {loop.step}: "
                + ", ".join(
                    f"{s.name} {100 * s.accuracy:.2f}% ± {100 * s.accuracy_std:.2f}" for s in self.scores
                )
            )
            for score in self.scores:  # the warning `topofr eval` gives for the same checkpoint
                if score.degenerate:
                    loop.progress.note(
                        f"step {loop.step}, " + degenerate_message(score.name, score.mean_cosine)
                    )
        self.scored_at = loop.step
        D.barrier(self.ctx)
