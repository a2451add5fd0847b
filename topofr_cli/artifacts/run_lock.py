"""One training per run folder: an advisory OS lock on a file inside it.

The lock is `fcntl.flock` on `RUN/.topofr-train.lock`, held for the whole training. The kernel drops it
when the process ends however it ends (kill -9 included), so a `--resume` after a crash finds the
folder free while a second training started next to a live one is refused. Under torchrun only rank 0
takes it: rank 0 is the process that writes the folder, and other nodes may not even see it.

The lock file may be deleted by its holder (on release). A process that opened the old file and then
obtained the lock on it would hold a lock nobody else sees, so `acquire` checks, once locked, that the
file it holds is still the one under the name, and starts again when it is not.
Platforms without `fcntl` (Windows) get no lock; flock works on local file systems and on NFS (Linux
emulates it with NFS byte-range locks).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from topofr_cli.errors import TopofrError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".topofr-train.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _refusal(root: Path, lock_path: Path) -> TopofrError:
    return TopofrError(
        f"{root}: another training ({_holder(lock_path)}) is running in this run directory; "
        "wait for it to end or choose another train.output"
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def ensure_unlocked(root: str | Path) -> None:
    """Raise TopofrError when a live training holds `root`'s lock; writes nothing."""
    root = Path(root)
    path = root / LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return  # released (and removed) in between
    try:
        if not _try_lock(fd):
            raise _refusal(root, path)
    finally:
        os.close(fd)  # closing drops the probe's lock


class RunLock:
    """The held lock of one run folder (`acquire`), released by `release` or by the process's end."""

    def __init__(self, root: Path, fd: int | None, created_root: bool) -> None:
        self.root = root
        self.path = root / LOCK_FILE
        self._fd = fd
        self.created_root = created_root  # the folder did not exist before: `release` may remove it

    @classmethod
    def acquire(cls, root: str | Path) -> RunLock:
        """Lock `root` (created if missing) or raise TopofrError naming it when a training holds it."""
        root = Path(root)
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return cls(root, None, created)
        path = root / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise TopofrError(
                    f"{path}: cannot open the run directory's lock file ({exc.strerror})"
                ) from None
            if not _try_lock(fd):
                os.close(fd)
                raise _refusal(root, path)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed the file while we waited for it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(root, fd, created)

    def release(self, *, remove_empty_root: bool = False) -> None:
        """Remove the lock file and unlock; `remove_empty_root` also removes a folder `acquire` created
        once nothing else is in it."""
        if self._fd is None and fcntl is not None:
            return
        self.path.unlink(missing_ok=True)  # while still locked, so nobody locks a file about to vanish
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove_empty_root and self.created_root:
            try:
                self.root.rmdir()
            except OSError:
                pass  # not empty (someone wrote into it meanwhile): keep it
