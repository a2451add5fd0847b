"""The rank-0 progress bar: step, epoch, loss, lr, img/s and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, *, total_steps: int, start_step: int, enabled: bool, console: Console | None = None):
        self.enabled = enabled
        self._progress = None
        if not enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, epoch="-",
                                             loss="-", lr="-", speed="-")

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def show(self, *, epoch: int, loss: float, lr: float, images_per_second: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, epoch=str(epoch), loss=f"{loss:.4f}", lr=f"{lr:.3g}",
                                  speed=f"{images_per_second:.1f}")

    def print(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, highlight=False)
