"""How the core reports progress and messages without drawing anything itself.

Core functions take a `Progress` and call `start(description, total)` for each countable piece of
work, `advance(n)` / `status(text)` on the task it returns, and `message(level, text)` for a line the
user should read (a note, a verification score). What it looks like is the caller's choice: the CLI
passes a rich renderer (`topofr_cli.cli.render`), a Python caller gets `tqdm.auto` bars (a notebook
shows widgets) unless it passes `SILENT` or `progress=False`.

This module is the only place in the core that imports a progress-bar package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Literal, Protocol, TypeVar

# "note": something worth a second look (printed as "note: …"); "log": a periodic status line (a
# logged training step) that a live bar already shows, so bar renderers may skip it and plain-text
# renderers (a log file, a redirected stdout) print it.
Level = Literal["info", "note", "log"]
T = TypeVar("T")


class ProgressTask(Protocol):
    """One bar: a count of done items out of `total` (None: not countable), with an optional status text."""

    def advance(self, n: int = 1) -> None: ...

    def status(self, text: str) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    """Where core functions report what they are doing; see the module docstring."""

    def start(
        self, description: str, total: int | None = None, *, completed: int = 0, transient: bool = False
    ) -> ProgressTask:
        """A new bar. `transient`: remove it when closed (a sub-step of a longer piece of work)."""
        ...

    def message(self, level: Level, text: str) -> None: ...


class _SilentTask:
    def advance(self, n: int = 1) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class SilentProgress:
    """Shows nothing (tests, benchmarks, non-zero ranks)."""

    def start(
        self, description: str, total: int | None = None, *, completed: int = 0, transient: bool = False
    ) -> ProgressTask:
        return _SilentTask()

    def message(self, level: Level, text: str) -> None:
        pass


SILENT = SilentProgress()


class _TqdmTask:
    def __init__(self, bar) -> None:
        self._bar = bar

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)

    def status(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self._bar.close()


class TqdmProgress:
    """`tqdm.auto` bars: a widget in a notebook, a text bar on a terminal (stderr)."""

    def start(
        self, description: str, total: int | None = None, *, completed: int = 0, transient: bool = False
    ) -> ProgressTask:
        from tqdm.auto import tqdm

        return _TqdmTask(
            tqdm(total=total, initial=completed, desc=description, leave=not transient, dynamic_ncols=True)
        )

    def message(self, level: Level, text: str) -> None:
        from tqdm.auto import tqdm

        if level == "log":
            return  # the bar's postfix shows it
        tqdm.write(f"note: {text}" if level == "note" else text)  # keeps open bars intact


def resolve_progress(progress: Progress | bool | None) -> Progress:
    """The Python API's `progress=` argument: a Progress, True/None (tqdm bars) or False (silent)."""
    if progress is None or progress is True:
        return TqdmProgress()
    if progress is False:
        return SILENT
    return progress


def track(
    progress: Progress, items: Iterable[T], description: str, total: int | None, *, transient: bool = False
) -> Iterator[T]:
    """Yield `items`, advancing one bar by one per item; the bar closes when the loop ends or stops."""
    task = progress.start(description, total, transient=transient)
    try:
        for item in items:
            yield item
            task.advance()
    finally:
        task.close()


@contextlib.contextmanager
def stage(progress: Progress, description: str, *, transient: bool = False) -> Iterator[None]:
    """A bar without countable parts (e.g. persistence of a whole space): open while the block runs."""
    task = progress.start(description, None, transient=transient)
    try:
        yield
    finally:
        task.close()
