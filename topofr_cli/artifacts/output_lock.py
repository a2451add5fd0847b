"""One writer per output: an advisory OS lock held from a command's output check to its last write.

Two commands writing the same `--out` (or dataset folder) at once would mix their files. Each command
that writes a folder or file takes `claim_output(path)` first; the second one gets one TopofrError
line naming the output and the holder's pid. The lock is `fcntl.flock` on a hidden sibling
`.NAME.topofr-lock` (the output itself may not exist yet: it is staged and renamed into place), so
the kernel drops it when the process dies, and the holder removes the file when it is done. A run
folder has its own lock inside it (`run_lock.py`); this one is for every other output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from topofr_cli.artifacts.run_lock import _holder, _try_lock, fcntl
from topofr_cli.errors import TopofrError

LOCK_SUFFIX = ".topofr-lock"


def lock_path(output: str | Path) -> Path:
    """The lock file that claims `output`: a hidden sibling, so it exists before the output does."""
    output = Path(os.path.abspath(output))
    return output.parent / f".{output.name}{LOCK_SUFFIX}"


def _open_locked(path: Path, output: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise TopofrError(f"{path}: cannot open the output's lock file ({exc.strerror})") from None
        if not _try_lock(fd):
            os.close(fd)
            raise TopofrError(
                f"{output}: another topofr command ({_holder(path)}) is writing this output; wait for "
                "it to end or choose another output"
            )
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed the file while we waited for it: lock the new one


@contextmanager
def claim_output(output: str | Path) -> Iterator[None]:
    """Hold `output` for this process (parent folders are created); TopofrError if another holds it."""
    output = Path(output)
    path = lock_path(output)
    if fcntl is None:  # pragma: no cover - Windows: no lock
        yield
        return
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _open_locked(path, output)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so nobody locks a file about to vanish
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the parent folders the claim created that stayed empty (a refused or failed command)."""
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (the command wrote into it) or gone: keep the rest
