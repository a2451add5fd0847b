"""Atomic writing: a file or a folder appears whole under its final name, or not at all.

Every writer in the code base goes through here. A file is written to a hidden sibling whose name no
other process can predict or already own (created with O_EXCL), then renamed onto the target with
`os.replace`, which is atomic on one file system. A folder is built the same way (`StagedDir`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.errors import TopofrError


def _sibling_name(path: Path, kind: str) -> str:
    # keep the target's suffix: np.save and savefig choose the format from it
    return f".{path.stem}.{secrets.token_hex(6)}.{kind}{path.suffix}"


# a temporary file of `atomic_path` (".step_00000003.1a2b3c4d5e6f.tmp.pt"), or of versions before it
# (".step_00000003.pt.tmp-1234", named after the writer's process id)
_TEMPORARY = re.compile(r"^\.[^/]+\.(?:[0-9a-f]{12}\.tmp(?:\.[^./]+)?|[^./]+\.tmp-\d+)$")


def is_temporary_name(name: str) -> bool:
    """Whether `name` is a temporary sibling an interrupted `atomic_path` writer can leave behind."""
    return _TEMPORARY.match(name) is not None


def _is_torch_write_failure(exc: RuntimeError) -> bool:
    # torch.save reports a failed write (disk full, file-size limit) as a RuntimeError from its zip writer
    text = str(exc)
    return "PytorchStreamWriter" in text or "inline_container" in text


@contextmanager
def os_errors_named(path: str | Path) -> Iterator[None]:
    """Turn an OS error while writing (disk full, file-size limit, permission) into one TopofrError
    line naming the file: most of them (a failed `write`) carry no file name of their own."""
    try:
        yield
    except TopofrError:
        raise
    except OSError as exc:
        raise TopofrError(f"{exc.filename or path}: cannot write ({exc.strerror or exc})") from None
    except RuntimeError as exc:
        if not _is_torch_write_failure(exc):
            raise
        raise TopofrError(
            f"{path}: cannot write (the write failed: is the disk full or a file-size limit reached?)"
        ) from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `path` to write; on success it is renamed onto `path`.

    The sibling exists (empty) when yielded, so writers that open by name (`np.save`, parquet,
    `savefig`, the ONNX exporter) simply overwrite it. On an exception it is deleted and `path` is
    untouched. `durable` flushes the bytes to disk before the rename (checkpoints). An OS error
    while writing is one TopofrError line naming `path`.
    """
    path = Path(path)
    with os_errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = path.with_name(_sibling_name(path, "tmp"))
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:  # astronomically unlikely; draw another name
                continue
    try:
        with os_errors_named(path):
            yield tmp
            if durable:
                _fsync_file(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Indented JSON with a final newline (the layout of every JSON file we write)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return Path(path)


def write_tensors(path: str | Path, data: Any) -> Path:
    """Save tensors / plain containers with torch (read back with `checkpoint.load_weights_file`)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def write_figure(figure: Any, path: str | Path, *, dpi: int, tight: bool = False) -> Path:
    """Save a matplotlib figure (format from the suffix); `tight` crops it to its content."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return Path(path)


class StagedDir:
    """A folder built in a hidden sibling of `target` and moved onto it by `commit`.

    `merge=False`: the staged folder replaces `target` whole (an old `target` is moved aside first
    and deleted only once the new one is in place). `merge=True`: each staged entry replaces the
    entry of the same name in `target`; other entries of `target` stay. Use as a context manager
    (commit on success, discard on error) or call `commit`/`discard` yourself.
    """

    def __init__(self, target: str | Path, *, merge: bool = False) -> None:
        self.target = Path(target)
        self.merge = merge
        with os_errors_named(self.target):
            self.target.parent.mkdir(parents=True, exist_ok=True)
            while True:
                self.path = self.target.with_name(_sibling_name(self.target, "staging"))
                try:
                    self.path.mkdir()  # fails if the name exists: nobody else owns this folder
                    break
                except FileExistsError:
                    continue
        self._open = True

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and self._open:
                self.commit()
        finally:
            self.discard()

    def commit(self, *, replace: bool = True) -> Path:
        """Move the staged folder onto the target; `replace=False` refuses an existing target."""
        with os_errors_named(self.target):
            return self._commit(replace)

    def _commit(self, replace: bool) -> Path:
        if self.merge:
            self.target.mkdir(exist_ok=True)
            for item in sorted(self.path.iterdir()):
                os.replace(item, self.target / item.name)
        elif self.target.exists():
            if not replace:
                raise TopofrError(f"{self.target}: already exists (pass --overwrite to replace it)")
            old = self.target.with_name(_sibling_name(self.target, "old"))
            os.replace(self.target, old)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.path, self.target)
        self._open = False
        return self.target

    def discard(self) -> None:
        """Drop whatever is still staged (nothing after a commit without merge)."""
        self._open = False
        shutil.rmtree(self.path, ignore_errors=True)
