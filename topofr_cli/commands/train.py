"""`topofr train` as one call: train (or resume) from a recipe, here or through torchrun.

import topofr_cli as tf
result = tf.train("quickstart", overrides=["schedule.max_steps=20"])
result.run.verification[0].accuracy, result.pixel_baselines
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.progress import Progress, resolve_progress

if TYPE_CHECKING:
    from topofr_cli.config import Recipe
    from topofr_cli.engine.trainer import RunResult


@dataclass
class TrainResult:
    """What a training did: the engine's `RunResult` (None when this process only launched torchrun
    workers, or said that a resumed run is already finished: `message`), and the raw-pixel baseline
    accuracy of each verification set, the number the model's accuracy is read against."""

    recipe: Recipe
    run: RunResult | None = None
    pixel_baselines: dict[str, float] = field(default_factory=dict)
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "run_dir": None if run is None else run.run_dir,
            "steps": None if run is None else run.steps,
            "verification": []
            if run is None
            else [
                {"name": s.name, "accuracy": s.accuracy, "accuracy_std": s.accuracy_std}
                for s in run.verification
            ],
            "pixel_baselines": self.pixel_baselines,
            "message": self.message,
        }


def load_training_recipe(recipe: str | Path | None, overrides: list[str]) -> Recipe:
    """The recipe a file or packaged name gives (the defaults for None), with `--set` `overrides`."""
    from topofr_cli.config import load_recipe
    from topofr_cli.recipes import resolve_recipe

    return load_recipe(resolve_recipe(str(recipe)) if recipe is not None else None, list(overrides))


def with_shorthands(overrides: list[str], *, device: str | None, init: str | Path | None) -> list[str]:
    """`--device` and `--init` as the recipe keys they stand for (JSON quoting keeps a path a string)."""
    overrides = list(overrides)
    if device is not None:
        overrides.append(f"train.device={device}")
    if init is not None:
        overrides.append(f"train.init={json.dumps(str(init))}")
    return overrides


def train(
    recipe: str | Path,
    *,
    overrides: list[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    init: str | Path | None = None,
    launch: Any = None,
    progress: Progress | bool | None = None,
) -> TrainResult:
    """Train from `recipe` (a YAML file or a packaged recipe's name) with `--set`-style `overrides`;
    `init`: fine-tune, the backbone's weights from this model file (the recipe key `train.init`).
    `launch` (an `engine.launch.LaunchSpec`) starts torchrun workers instead when it needs them."""
    from topofr_cli.engine.distributed import launched_by_torchrun
    from topofr_cli.recipes import resolve_recipe

    overrides = with_shorthands(overrides, device=device, init=init)
    loaded = load_training_recipe(recipe, overrides)
    if launch is not None and launch.needs_launcher and not launched_by_torchrun():
        return _launch(loaded, resolve_recipe(str(recipe)), overrides, resume, overwrite, launch)
    from topofr_cli.engine.trainer import train as run_training

    run = run_training(loaded, resume=resume, overwrite=overwrite, progress=resolve_progress(progress))
    result = TrainResult(loaded, run, message=run.finished_before)
    if run.rank == 0 and run.verification and not run.finished_before:
        from topofr_cli.evaluation.baseline import pixel_baselines

        result.pixel_baselines = pixel_baselines([score.path for score in run.verification])
    return result


def _launch(
    recipe: Recipe, recipe_path: Path, overrides: list[str], resume: bool, overwrite: bool, spec: Any
) -> TrainResult:
    from topofr_cli.engine.init_weights import plan_init
    from topofr_cli.engine.launch import launch
    from topofr_cli.engine.preflight import plan_run

    spec.validate()
    recipe = plan_init(recipe, resume=resume).recipe  # fine-tuning: train.init checked before workers
    plan = plan_run(recipe, resume=resume, overwrite=overwrite)  # one clear error before any worker starts
    if plan.finished:
        return TrainResult(recipe, message=plan.finished_message())
    worker_args = [str(recipe_path)]
    for text in overrides:
        worker_args += ["--set", text]
    worker_args += ["--resume"] if resume else []
    worker_args += ["--overwrite"] if overwrite else []
    launch(spec, worker_args)
    return TrainResult(recipe)
