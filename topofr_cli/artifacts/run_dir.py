"""A training run's folder (`train.output`): its layout and the writers of its files, in one place.

recipe.yaml                    the recipe the run was started with (after --set overrides)
metrics.csv                    one row per logged step and per verification (docs/run-folder.md)
train.log                      the run's report as plain lines, each after its local time
                               (`2026-05-01 14:03:07 step 40/200 …`): banner, a line per logged step,
                               verification scores, summary; a resumed run appends to it
checkpoints/step_XXXXXXXX.pt   `Checkpoint` files, step 0 (the initial model) first
tensorboard/                   TensorBoard scalars (when tensorboard is installed)
.topofr-train.lock             held by the training running in it (artifacts/run_lock.py)
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from topofr_cli.artifacts.atomic import atomic_path, is_temporary_name, write_text
from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
)
from topofr_cli.artifacts.run_lock import LOCK_FILE
from topofr_cli.config import Recipe, recipe_yaml

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.csv"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time, ISO 8601 with a space: sorts as text


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / CHECKPOINT_DIR

    def checkpoint(self, step: int) -> Path:
        return checkpoint_path(self.root, step)

    def checkpoints(self) -> list[tuple[int, Path]]:
        return list_checkpoints(self.root)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.root)

    def is_empty(self) -> bool:
        """Missing, or holding nothing but a lock file (of a training that ended or died)."""
        if not self.root.is_dir():
            return not self.root.exists()
        return all(entry.name == LOCK_FILE for entry in self.root.iterdir())

    def clear(self) -> None:
        """Delete everything in the folder but its lock file. Entries that are symbolic links are
        removed as links: nothing outside the folder is deleted through them."""
        for entry in self.root.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files interrupted writers left in the folder and in checkpoints/.

        Only the run's lock holder may call this: no other process writes there then."""
        removed = []
        for folder in (self.root, self.checkpoint_dir):
            if not folder.is_dir() or folder.is_symlink() and folder != self.root:
                continue
            for entry in folder.iterdir():
                if is_temporary_name(entry.name) and (entry.is_symlink() or entry.is_file()):
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

    def prepare(self, recipe: Recipe, *, overwrite: bool) -> None:
        """(Rank 0, holding the run's lock) empty the folder for --overwrite, create it and record the
        recipe atomically."""
        if overwrite and self.root.is_dir():
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.recipe, recipe_yaml(recipe))

    def open_metrics(
        self, columns: Sequence[str], *, resume_step: int | None = None, tensorboard: bool = True
    ) -> MetricsLog:
        """(Rank 0) metrics.csv with these columns (and tensorboard/ scalars when installed)."""
        return MetricsLog(self, columns, resume_step=resume_step, tensorboard=tensorboard)

    def open_log(self) -> TrainLog:
        """(Rank 0) train.log, appended to: a resumed run continues the same log."""
        return TrainLog(self.log)


class TrainLog:
    """train.log: one line per call, after the local time; flushed each time, so a crash or a kill leaves
    the log up to its last line."""

    def __init__(self, path: Path) -> None:
        self._handle: TextIO | None = open(path, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        if self._handle is not None:
            self._handle.write(f"{time.strftime(LOG_TIME_FORMAT)} {line}\n")
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _open_tensorboard(log_dir: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _rows_up_to(path: Path, step: int) -> list[dict[str, str]]:
    kept: list[dict[str, str]] = []
    if not path.is_file():
        return kept
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                if int(row.get("step") or -1) <= step:
                    kept.append(row)
            except ValueError:
                continue
    return kept


class MetricsLog:
    """metrics.csv: append-only with a fixed header, rows may leave columns empty (evaluation rows); the
    same numbers as TensorBoard scalars when tensorboard is installed.

    On resume the rows logged after the checkpoint's step (by the interrupted run) are dropped, so the
    file describes exactly one history; the file is rewritten atomically before appending starts.
    """

    def __init__(
        self, run: RunDir, columns: Sequence[str], *, resume_step: int | None, tensorboard: bool
    ) -> None:
        self.columns = ["step", *[c for c in columns if c != "step"]]
        self.path = run.metrics
        kept = _rows_up_to(self.path, resume_step) if resume_step is not None else []
        for row in kept:  # keep columns the earlier run had even if this run does not log them
            self.columns.extend(k for k in row if k not in self.columns)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self._handle: TextIO | None = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, extrasaction="ignore")
        self._tensorboard = _open_tensorboard(run.tensorboard) if tensorboard else None

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if self._handle is None:
            return
        unknown = [k for k in values if k not in self.columns]
        if unknown:
            raise KeyError(f"metrics columns not declared at start: {unknown}")
        self._writer.writerow({"step": step, **{k: _cell(v) for k, v in values.items()}})
        self._handle.flush()
        if self._tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """metrics.csv's rows as dicts of strings (empty string: not logged at that step)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
