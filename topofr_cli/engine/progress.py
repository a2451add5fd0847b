"""The training bar (step, epoch, loss, lr, img/s) as calls on a `topofr_cli.progress.Progress`."""

from __future__ import annotations

from topofr_cli.progress import SILENT, Progress


class TrainProgress:
    """Rank 0 reports through `progress`; the other ranks stay silent (`enabled=False`)."""

    def __init__(self, *, total_steps: int, start_step: int, enabled: bool, progress: Progress) -> None:
        self.enabled = enabled
        self._progress = progress if enabled else SILENT
        self._total, self._start = total_steps, start_step
        self._task = None

    def __enter__(self) -> TrainProgress:
        self._task = self._progress.start("train", self._total, completed=self._start)
        self._task.status("epoch - loss - lr - - img/s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.close()

    def advance(self) -> None:
        self._task.advance()

    def show(self, *, epoch: int, loss: float, lr: float, images_per_second: float) -> None:
        self._task.status(f"epoch {epoch} loss {loss:.4f} lr {lr:.3g} {images_per_second:.1f} img/s")

    def print(self, message: str) -> None:
        self._progress.message("info", message)

    def note(self, message: str) -> None:
        self._progress.message("note", message)
