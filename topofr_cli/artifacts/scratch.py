"""Scratch folders: private temporary directories that are deleted when their owner is done.

Every temporary file or folder topofr makes comes from `artifacts/` (this module for scratch space,
`atomic.py` for the hidden siblings of atomic writes), so one place decides where they go and that
they are cleaned up.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ScratchDir:
    """A fresh private folder in the system's temporary directory; `cleanup()` (or the garbage collector)
    deletes it with its contents."""

    def __init__(self, prefix: str) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix=prefix)
        self.path = Path(self._folder.name)

    def cleanup(self) -> None:
        self._folder.cleanup()


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A `ScratchDir` for the duration of a `with` block."""
    folder = ScratchDir(prefix)
    try:
        yield folder.path
    finally:
        folder.cleanup()
