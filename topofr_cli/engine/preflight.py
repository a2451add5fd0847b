"""Everything checked before a run writes anything: data path, class count, run directory, resume point.

The same checks run in the `topofr train` parent before it starts torchrun workers, so a user error is
one line from one process instead of a failure in every worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from topofr_cli.artifacts.checkpoint import Checkpoint
from topofr_cli.artifacts.outputs import RUN, check_kind, check_not_input, check_output
from topofr_cli.artifacts.run_dir import RunDir
from topofr_cli.artifacts.run_lock import ensure_unlocked
from topofr_cli.config import Recipe
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.errors import TopofrError


@dataclass(kw_only=True)
class RunPlan:
    recipe: Recipe
    run: RunDir
    data_path: Path
    generate_data: bool  # the synthetic set must be generated at data_path first
    num_classes: int | None  # None until the data exists
    resume_from: Checkpoint | None  # read once, here
    overwrite: bool
    notes: list[str] = field(default_factory=list)  # for the user: damaged checkpoints --resume skipped

    @property
    def finished(self) -> bool:
        """--resume on a run that already reached the recipe's end (schedule.epochs or max_steps):
        nothing to train, nothing to write."""
        if self.resume_from is None:
            return False
        position = self.resume_from.hook_state("loop") or {}
        schedule = self.recipe.schedule
        if int(position.get("epoch", 0)) >= schedule.epochs:
            return True
        return schedule.max_steps is not None and int(position.get("step", 0)) >= schedule.max_steps

    def finished_message(self) -> str:
        position = (self.resume_from.hook_state("loop") if self.resume_from else None) or {}
        return (
            f"{self.run.root}: this run is already finished (step {position.get('step')}, "
            f"{position.get('epoch')} of {self.recipe.schedule.epochs} epochs); nothing to resume. Raise "
            "schedule.epochs or schedule.max_steps with --set to train further"
        )


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(run_dir: Path) -> None:
    check_kind(run_dir, RUN)
    anchor = _nearest_existing(run_dir)
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise TopofrError(f"{run_dir}: run directory is not writable ({anchor} does not allow writing)")


def _check_link(run_dir: Path, *, overwrite: bool) -> None:
    """A run folder given as a symbolic link is written through, but never emptied through."""
    if not run_dir.is_symlink():
        return
    target = os.path.realpath(run_dir)
    if not run_dir.exists():
        raise TopofrError(f"{run_dir}: train.output is a symbolic link to {target}, which does not exist")
    if overwrite and not RunDir(run_dir).is_empty():
        raise TopofrError(
            f"{run_dir}: train.output is a symbolic link (to {target}); --overwrite does not "
            f"delete through links: remove the link, or set train.output to {target}"
        )


def newest_intact_checkpoint(run: RunDir) -> tuple[Checkpoint, list[str]]:
    """The newest checkpoint of the run that reads back whole, and one note per damaged newer one."""
    notes: list[str] = []
    found = run.checkpoints()
    if not found:
        raise TopofrError(
            f"{run.root}: --resume given but the run directory holds no checkpoint (checkpoints/step_*.pt)"
        )
    for _step, path in reversed(found):
        try:
            return Checkpoint.read(path), notes
        except TopofrError as exc:
            notes.append(f"{exc}; skipped, resuming from an earlier checkpoint")
    raise TopofrError(
        f"{run.root}: --resume found no intact checkpoint: all {len(found)} are damaged "
        f"(the newest: {notes[0].split('; skipped')[0]})"
    )


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
        raise TopofrError(
            f"{dataset.path}: labels span [{int(labels.min())}, {int(labels.max())}] "
            f"but the dataset declares {found} classes"
        )
    return found


def plan_run(recipe: Recipe, *, resume: bool, overwrite: bool, check_lock: bool = True) -> RunPlan:
    """Validate the recipe against the file system; raises TopofrError, writes nothing.

    `check_lock=False` on torchrun ranks other than 0: rank 0 may already hold the run's lock."""
    if recipe.data.path is None:
        raise TopofrError(
            "recipe key 'data.path' is not set: set data.path (e.g. --set data.path=DIR) "
            "to a packed set, a RecordIO folder or an image folder"
        )
    data_path = Path(recipe.data.path)
    generate = not data_path.exists()
    if generate and recipe.data.synthetic is None:
        raise TopofrError(
            f"{data_path}: data.path does not exist (and the recipe has no data.synthetic "
            "section to generate it)"
        )
    num_classes = None
    if not generate:
        from topofr_cli.data import open_dataset

        num_classes = dataset_class_count(recipe, open_dataset(data_path))
    elif recipe.head.num_classes is not None and recipe.head.num_classes != recipe.data.synthetic.identities:
        raise TopofrError(
            f"{data_path}: the synthetic set will have {recipe.data.synthetic.identities} "
            f"classes but the recipe's head.num_classes is {recipe.head.num_classes}"
        )
    else:
        num_classes = recipe.data.synthetic.identities
    for name in recipe.data.val_bins:
        if not Path(name).is_file():
            raise TopofrError(f"{name}: data.val_bins file not found")

    run_dir = Path(recipe.train.output)
    init = (
        [recipe.train.init] if recipe.train.init and not resume else []
    )  # the weights a fine-tune starts from
    check_not_input([run_dir], [data_path, *recipe.data.val_bins, *init])  # --overwrite must never reach them
    _check_writable(run_dir)
    _check_link(run_dir, overwrite=overwrite and not resume)
    if check_lock:
        ensure_unlocked(run_dir)
    run = RunDir(run_dir)
    checkpoint, notes = None, []
    if resume:
        checkpoint, notes = newest_intact_checkpoint(run)
        checkpoint.check_resumable(
            network=recipe.model.network, embedding_size=recipe.model.embedding_size, num_classes=num_classes
        )
    elif not run.is_empty():  # a lock file alone is what a finished or killed start leaves
        check_output(run_dir, RUN, overwrite=overwrite)
    return RunPlan(
        recipe=recipe,
        run=run,
        data_path=data_path,
        generate_data=generate,
        num_classes=num_classes,
        resume_from=checkpoint,
        overwrite=overwrite,
        notes=notes,
    )
