"""The training bar (step, epoch, loss, lr, img/s) as calls on a `topofr_cli.progress.Progress`,
and the run's log file: every line rank 0 reports is also appended to `RUN/train.log`
(written by `artifacts.run_dir.TrainLog`, which puts the time before each line)."""

from __future__ import annotations

from pathlib import Path

from topofr_cli.artifacts.run_dir import TrainLog
from topofr_cli.progress import SILENT, Level, Progress


class TrainProgress:
    """Rank 0 reports through `progress` and into `log_path`; the other ranks stay silent (`enabled=False`)."""

    def __init__(
        self,
        *,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: Progress,
        log_path: Path | None = None,
    ) -> None:
        self.enabled = enabled
        self._progress = progress if enabled else SILENT
        self._total, self._start = total_steps, start_step
        self._task = None
        self._log_path = log_path if enabled else None
        self._log: TrainLog | None = None

    def __enter__(self) -> TrainProgress:
        if self._log_path is not None:  # appended to: a resumed run continues the same log
            self._log = TrainLog(self._log_path)
        self._task = self._progress.start("train", self._total, completed=self._start)
        self._task.status("epoch - loss - lr - - img/s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def advance(self) -> None:
        self._task.advance()

    def show(self, *, epoch: int, loss: float, lr: float, images_per_second: float) -> None:
        self._task.status(f"epoch {epoch} loss {loss:.4f} lr {lr:.3g} {images_per_second:.1f} img/s")

    def _emit(self, level: Level, message: str) -> None:
        if self._log is not None:
            self._log.write(("note: " if level == "note" else "") + message)
        self._progress.message(level, message)

    def print(self, message: str) -> None:
        self._emit("info", message)

    def note(self, message: str) -> None:
        self._emit("note", message)

    def log(self, message: str) -> None:
        """A periodic line (a logged step): in train.log always, on screen where no live bar shows it."""
        self._emit("log", message)
