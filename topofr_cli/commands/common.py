"""What every command shares: the model a path names, one writer per output, datasets with `--detect`.

A command claims its outputs (`claims`) and checks them against its inputs and the output policy
(`artifacts.outputs`) before any work starts, and marks the folders it creates as topofr's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.output_lock import claim_output
from topofr_cli.artifacts.outputs import CHECKPOINT_FOLDER, MARKER, write_marker
from topofr_cli.errors import TopofrError
from topofr_cli.progress import SILENT, Progress


def resolve_model(model: str | Path, progress: Progress = SILENT) -> Path:
    """The model file `model` names: itself, or for a run folder its latest checkpoint (saying so)."""
    from topofr_cli.artifacts.checkpoint import latest_checkpoint

    model = Path(model)
    if not model.is_dir():
        return model
    if not (model / CHECKPOINT_FOLDER).is_dir():
        raise TopofrError(f"{model}: is a folder, not a model file or a run folder (no {CHECKPOINT_FOLDER}/)")
    latest = latest_checkpoint(model)
    if latest is None:
        raise TopofrError(f"{model}: run folder without checkpoints ({model / CHECKPOINT_FOLDER} is empty)")
    progress.message("info", f"{model}: a run folder; using its latest checkpoint {latest}")
    return latest


@contextmanager
def claims(outputs: Iterable[Path | None]) -> Iterator[None]:
    """Hold every named output for this process (one TopofrError line when another command holds one)."""
    with ExitStack() as stack:
        for output in outputs:
            if output is not None:
                stack.enter_context(claim_output(output))
        yield


def is_fresh(folder: Path) -> bool:
    """Absent or empty: a folder this command may mark as its own once it has written into it."""
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def mark(folder: Path, command: str, *, fresh: bool) -> None:
    """Leave the marker of topofr's outputs in `folder` when this command created it (`fresh`): a
    folder that held the user's files before stays theirs, so `--overwrite` never replaces it whole."""
    if fresh and folder.is_dir() and not (folder / MARKER).exists():
        write_marker(folder, command)


def clamped_workers(workers: int, progress: Progress) -> int:
    """`--workers` capped at the usable CPU cores, saying so when it bites."""
    from topofr_cli.data.workers import workers_for_cores

    workers, note = workers_for_cores(workers)
    if note:
        progress.message("note", note)
    return workers


def open_data(data: Path, detector: str | None, *, workers: int = 1, progress: Progress = SILENT) -> Any:
    """open_dataset(data), or with a detector name the faces detected and aligned in a raw photo folder
    (kept in a temporary folder that lives as long as the returned dataset)."""
    from topofr_cli.data import open_dataset
    from topofr_cli.data.detect_folder import open_detected_folder

    if detector is None:
        return open_dataset(data)
    dataset, report = open_detected_folder(data, detector=detector, workers=workers, progress=progress)
    if report.no_face:
        progress.message(
            "note",
            f"no face found in {len(report.no_face)} of {len(dataset) + len(report.no_face)} photos "
            f"(left out, e.g. {report.no_face[0]})",
        )
    return dataset
