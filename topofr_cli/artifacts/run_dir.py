"""The layout of a training run's folder (`train.output`), in one place.

recipe.yaml                    the recipe the run was started with (after --set overrides)
metrics.csv                    one row per logged step and per verification (docs/run-folder.md)
train.log                      the run's report as plain lines: banner, a line per logged step,
                               verification scores, summary; a resumed run appends to it
checkpoints/step_XXXXXXXX.pt   `Checkpoint` files, step 0 (the initial model) first
tensorboard/                   TensorBoard scalars (when tensorboard is installed)
.topofr-train.lock             held by the training running in it (artifacts/run_lock.py)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from topofr_cli.artifacts.atomic import atomic_path, is_temporary_name
from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
)
from topofr_cli.artifacts.run_lock import LOCK_FILE
from topofr_cli.config import Recipe, save_recipe

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.csv"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"


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
        with atomic_path(self.recipe) as tmp:
            save_recipe(recipe, tmp)
