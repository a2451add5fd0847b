"""The layout of a training run's folder (`train.output`), in one place.

  recipe.yaml                    the recipe the run was started with (after --set overrides)
  metrics.csv                    one row per logged step and per verification (docs/run-folder.md)
  train.log                      the run's report as plain lines: banner, a line per logged step,
                                 verification scores, summary; a resumed run appends to it
  checkpoints/step_XXXXXXXX.pt   `Checkpoint` files, step 0 (the initial model) first
  tensorboard/                   TensorBoard scalars (when tensorboard is installed)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
)
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

    def prepare(self, recipe: Recipe, *, overwrite: bool) -> None:
        """(Rank 0) empty the folder for --overwrite, create it and record the recipe atomically."""
        if overwrite and self.root.is_dir():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.recipe) as tmp:
            save_recipe(recipe, tmp)
