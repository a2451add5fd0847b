"""Everything checked before a run writes anything: data path, class count, run directory, resume point.

The same checks run in the `topofr train` parent before it starts torchrun workers, so a user error is
one line from one process instead of a failure in every worker.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topofr_cli.config import Recipe, save_recipe
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.engine.checkpoint import check_same_model, latest_checkpoint, load_checkpoint
from topofr_cli.errors import TopofrError

RECIPE_FILE = "recipe.yaml"


@dataclass
class RunPlan:
    recipe: Recipe
    run_dir: Path
    data_path: Path
    generate_data: bool  # the synthetic set must be generated at data_path first
    num_classes: int | None  # None until the data exists
    resume_from: Path | None
    overwrite: bool
    resume_payload: dict[str, Any] | None = None  # the checkpoint, loaded once


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise TopofrError(f"{run_dir}: train.output exists and is not a directory")
    anchor = _nearest_existing(run_dir)
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise TopofrError(f"{run_dir}: run directory is not writable ({anchor} does not allow writing)")


def dataset_class_count(recipe: Recipe, dataset: FaceDataset) -> int:
    """The class count the classifier is built with; the recipe's `head.num_classes` must agree."""
    found = int(dataset.num_classes)
    wanted = recipe.head.num_classes
    if wanted is not None and wanted != found:
        raise TopofrError(
            f"{dataset.path}: dataset has {found} classes but the recipe's head.num_classes is {wanted}"
        )
    labels = dataset.labels
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= found):
        raise TopofrError(f"{dataset.path}: labels span [{int(labels.min())}, {int(labels.max())}] "
                          f"but the dataset declares {found} classes")
    return found


def plan_run(recipe: Recipe, *, resume: bool, overwrite: bool) -> RunPlan:
    """Validate the recipe against the file system; raises TopofrError, writes nothing."""
    if recipe.data.path is None:
        raise TopofrError("recipe key 'data.path' is not set: set data.path (e.g. --set data.path=DIR) "
                          "to a packed set, a RecordIO folder or an image folder")
    data_path = Path(recipe.data.path)
    generate = not data_path.exists()
    if generate and recipe.data.synthetic is None:
        raise TopofrError(f"{data_path}: data.path does not exist (and the recipe has no data.synthetic "
                          "section to generate it)")
    num_classes = None
    if not generate:
        from topofr_cli.data import open_dataset

        num_classes = dataset_class_count(recipe, open_dataset(data_path))
    elif recipe.head.num_classes is not None and recipe.head.num_classes != recipe.data.synthetic.identities:
        raise TopofrError(f"{data_path}: the synthetic set will have {recipe.data.synthetic.identities} "
                          f"classes but the recipe's head.num_classes is {recipe.head.num_classes}")
    else:
        num_classes = recipe.data.synthetic.identities
    for name in recipe.data.val_bins:
        if not Path(name).is_file():
            raise TopofrError(f"{name}: data.val_bins file not found")

    run_dir = Path(recipe.train.output)
    _check_writable(run_dir)
    resume_from, payload = None, None
    if resume:
        resume_from = latest_checkpoint(run_dir)
        if resume_from is None:
            raise TopofrError(f"{run_dir}: --resume given but the run directory holds no checkpoint "
                              "(checkpoints/step_*.pt)")
        payload = load_checkpoint(resume_from)
        check_same_model(payload, resume_from, network=recipe.model.network,
                         embedding_size=recipe.model.embedding_size, num_classes=num_classes)
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise TopofrError(f"{run_dir}: run directory is not empty; pass --resume to continue that run or "
                          "--overwrite to replace it")
    return RunPlan(recipe, run_dir, data_path, generate, num_classes, resume_from, overwrite,
                   payload if resume else None)


def prepare_run_dir(plan: RunPlan) -> None:
    """(Rank 0) empty the directory for --overwrite, create it and record the recipe atomically."""
    if plan.overwrite and plan.resume_from is None and plan.run_dir.is_dir():
        shutil.rmtree(plan.run_dir)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = plan.run_dir / f".{RECIPE_FILE}.tmp-{os.getpid()}"
    save_recipe(plan.recipe, tmp)
    os.replace(tmp, plan.run_dir / RECIPE_FILE)
