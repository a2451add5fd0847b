"""How the CLI shows the core's progress (`topofr_cli.progress`): rich bars on a terminal, plain
lines otherwise.

A renderer is any `topofr_cli.progress.Progress`. `RichProgress` is the terminal one: one live
display is open while at least one bar is; when the last bar closes the display stops, so the
finished bars stay on screen above whatever the command prints next (a table, another bar).
`PlainProgress` is for a log file (nohup, SLURM, `| tee`), where a live bar would write only its
final state: it prints each message and periodic line as it comes, a line when a bar starts, a
progress line when nothing has been printed for `quiet_seconds`, and one line per finished bar; every
line starts with the local time, so a log shows when each thing happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBars
from rich.text import Text

from topofr_cli.progress import SILENT, Level, Progress, ProgressTask


class _RichTask:
    def __init__(self, owner: RichProgress, task: TaskID, transient: bool) -> None:
        self._owner, self._task, self.transient = owner, task, transient
        self._closed = False

    def advance(self, n: int = 1) -> None:
        self._owner.bars.advance(self._task, n)

    def status(self, text: str) -> None:
        self._owner.bars.update(self._task, status=text)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner.finish(self)


class RichProgress:
    """Rich bars: description, bar, done/total, status text, time remaining (or elapsed)."""

    def __init__(self, console: Console, *, elapsed: bool = False) -> None:
        self.console = console
        self._elapsed = elapsed
        self.bars: RichBars | None = None
        self._open: list[_RichTask] = []

    def _new_bars(self) -> RichBars:
        clock = TimeElapsedColumn() if self._elapsed else TimeRemainingColumn()
        return RichBars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            clock,
            console=self.console,
        )

    def start(
        self, description: str, total: int | None = None, *, completed: int = 0, transient: bool = False
    ) -> ProgressTask:
        if self.bars is None:
            self.bars = self._new_bars()
            self.bars.start()
        task = _RichTask(
            self, self.bars.add_task(description, total=total, completed=completed, status=""), transient
        )
        self._open.append(task)
        return task

    def finish(self, task: _RichTask) -> None:
        bars = self.bars
        if bars is None:
            return
        if next(t for t in bars.tasks if t.id == task._task).total is None:
            bars.update(task._task, total=1, completed=1)  # a stage without countable parts: done
        if task.transient:
            bars.remove_task(task._task)
        self._open.remove(task)
        if not self._open:
            bars.live.transient = not bars.tasks  # nothing left to keep on screen
            bars.stop()
            self.bars = None

    def message(self, level: Level, text: str) -> None:
        if level == "log":
            return  # the live bar's status text shows it
        line = Text.assemble(("note:", "yellow"), " ", text) if level == "note" else Text(text)
        self.console.print(line, highlight=False)


# the time at the start of every plain line (local, ISO 8601 with a space, as train.log's lines)
LINE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
QUIET_SECONDS = 30.0  # a plain log says where a bar stands after this long without a line


class _PlainTask:
    def __init__(
        self, owner: PlainProgress, description: str, total: int | None, completed: int, transient: bool
    ) -> None:
        self._owner, self._description, self._total = owner, description, total
        self._done, self._transient = completed, transient
        self._started, self._closed = time.perf_counter(), False
        if not transient:
            of = f" ({total:,})" if total is not None else ""
            owner.line(f"{description}: started{of}")

    def _count(self) -> str:
        return f"{self._done:,}/{self._total:,}" if self._total is not None else f"{self._done:,}"

    def advance(self, n: int = 1) -> None:
        self._done += n
        if not self._transient and self._owner.quiet_for() >= self._owner.quiet_seconds:
            elapsed = time.perf_counter() - self._started
            self._owner.line(f"{self._description}: {self._count()} after {elapsed:.0f} s")

    def status(self, text: str) -> None:
        pass  # a status changes many times a second: only the periodic lines are worth a line

    def close(self) -> None:
        if self._closed or self._transient:
            return
        self._closed = True
        count = f"{self._count()} " if self._total is not None else ""
        self._owner.line(f"{self._description}: {count}done in {time.perf_counter() - self._started:.0f} s")


class PlainProgress:
    """Plain lines, each starting with the local time, no cursor movement: for output that is not a
    terminal."""

    def __init__(self, console: Console, *, quiet_seconds: float = QUIET_SECONDS) -> None:
        self.console = console
        self.quiet_seconds = quiet_seconds
        self._last_line = time.perf_counter()

    def line(self, text: str) -> None:
        self._last_line = time.perf_counter()
        self.console.print(
            f"{time.strftime(LINE_TIME_FORMAT)} {text}", highlight=False, soft_wrap=True, markup=False
        )

    def quiet_for(self) -> float:
        """Seconds since the last line."""
        return time.perf_counter() - self._last_line

    def start(
        self, description: str, total: int | None = None, *, completed: int = 0, transient: bool = False
    ) -> ProgressTask:
        return _PlainTask(self, description, total, completed, transient)

    def message(self, level: Level, text: str) -> None:
        self.line(f"note: {text}" if level == "note" else text)


def for_console(console: Console, *, elapsed: bool = False) -> Progress:
    """Rich bars when `console` is a terminal, plain lines when it is redirected (a file, a pipe)."""
    return RichProgress(console, elapsed=elapsed) if console.is_terminal else PlainProgress(console)


def printer(progress: Progress, console: Console) -> Callable[[str], None]:
    """How a command prints its own lines (rich markup allowed) next to `progress`: timed plain lines
    when `progress` is the plain renderer, else on `console` as usual."""
    if isinstance(progress, PlainProgress):
        return lambda text: progress.line(Text.from_markup(text).plain)
    return lambda text: console.print(text, highlight=False, soft_wrap=True)


def bars(console: Console, *, enabled: bool = True, elapsed: bool = False) -> Progress:
    """Rich bars on `console`, or nothing (`--no-progress`)."""
    return RichProgress(console, elapsed=elapsed) if enabled else SILENT
