"""Write a copy of a dataset without its most damaging images (clean, then retrain).

Images are copied as stored (`ds.encoded(i)`), never re-encoded, so the kept images are
byte-identical to the source. Class ids are kept as they were, even for a class that loses
all its images, so a model trained on the clean set has the same classifier layout.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from topofr_cli.artifacts.outputs import DATASET, check_output
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.errors import TopofrError
from topofr_cli.hardness.ranking import HardnessTable
from topofr_cli.progress import Progress, resolve_progress, track


@dataclass
class CleanReport:
    path: Path
    kept: int
    dropped: int


def _check_rule(drop_top: int | None, drop_above: float | None) -> None:
    if (drop_top is None) == (drop_above is None):
        raise TopofrError("--write-clean: give exactly one of --drop-top K or --drop-above X")


def check_clean_options(
    out_dir: Path | None, *, drop_top: int | None, drop_above: float | None, overwrite: bool
) -> None:
    """Refuse a clean-set request that cannot be written, before any scoring (`out_dir` None: no clean set)."""
    if out_dir is None:
        if drop_top is not None or drop_above is not None:
            raise TopofrError("--drop-top/--drop-above: only meaningful with --write-clean OUT")
        return
    _check_rule(drop_top, drop_above)
    check_output(out_dir, DATASET, overwrite=overwrite)


def flagged_mask(table: HardnessTable, *, drop_top: int | None, drop_above: float | None) -> np.ndarray:
    """Boolean [N]: the `drop_top` highest-SDS images, or those with SDS > `drop_above`."""
    _check_rule(drop_top, drop_above)
    flagged = np.zeros(len(table), dtype=bool)
    if drop_top is not None:
        if drop_top < 0:
            raise TopofrError(f"--drop-top: expected a non-negative count, got {drop_top}")
        flagged[table.ranking()[:drop_top]] = True
    else:
        flagged[table.sds > drop_above] = True
    return flagged


def verification_bins_to_copy(dataset: FaceDataset) -> list[Path]:
    """The `.bin` files that meta.json's `verification_bins` names, resolved inside the dataset folder.

    The names come from a file, so they are checked before anything is copied: each must be a plain
    name or relative path that, with symlinks resolved, stays inside the dataset folder and is a
    file; the copy is written under its base name (never a path) in the output folder. Entries that
    name no file are left out, as before."""
    meta = getattr(dataset, "meta", None) or {}
    names = meta.get("verification_bins", [])
    where = f"{Path(dataset.path) / 'meta.json'}: verification_bins"
    if not isinstance(names, list):
        raise TopofrError(f"{where} must be a list of file names, got {type(names).__name__}")
    root = Path(dataset.path).resolve()
    found: dict[str, Path] = {}
    for name in names:
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise TopofrError(
                f"{where} entry {str(name)[:200]!r} is not a relative name inside the dataset folder"
            )
        try:
            resolved = (root / name).resolve(strict=True)
        except FileNotFoundError:
            continue
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
            raise TopofrError(f"{where} entry {name[:200]!r}: cannot resolve ({exc})") from None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            raise TopofrError(
                f"{where} entry {name[:200]!r} resolves to {resolved}, which is not a file "
                f"inside the dataset folder {root}"
            )
        if resolved.name in found and found[resolved.name] != resolved:
            raise TopofrError(f"{where}: two entries share the file name {resolved.name!r}")
        found[resolved.name] = resolved
    return list(found.values())


def write_clean_dataset(
    dataset: FaceDataset,
    table: HardnessTable,
    out_dir: str | Path,
    *,
    drop_top: int | None = None,
    drop_above: float | None = None,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> CleanReport:
    """Pack every image of `dataset` that is not flagged into `out_dir` (same order, same labels)."""
    from topofr_cli.data.packed import PackedWriter

    flagged = flagged_mask(table, drop_top=drop_top, drop_above=drop_above)
    keep = np.flatnonzero(~flagged)
    if keep.size == 0:
        raise TopofrError(f"{out_dir}: every image would be dropped; nothing to write")
    source = f"{dataset.path} without its {int(flagged.sum())} highest-SDS images"
    bins = verification_bins_to_copy(dataset)
    with PackedWriter(out_dir, source=source, overwrite=overwrite) as writer:
        for i in track(resolve_progress(progress), keep.tolist(), "writing clean set", int(keep.size)):
            writer.add(dataset.encoded(i), int(dataset.labels[i]), dataset.source_key(i))
        copied = []
        for bin_path in bins:  # held-out verification pairs are not training images: carry them over
            shutil.copyfile(bin_path, writer.tmp_dir / bin_path.name, follow_symlinks=False)
            copied.append(bin_path.name)
        extra = {"num_classes": int(dataset.num_classes), "dropped_by_sds": int(flagged.sum())}
        if copied:
            extra["verification_bins"] = copied
        path = writer.finish(extra)
    return CleanReport(path=Path(path), kept=int(keep.size), dropped=int(flagged.sum()))
