"""Helpers shared by the CLI commands: consoles and the one-line error convention."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from topofr_cli.errors import PreflightError, TopofrError

console = Console()
err_console = Console(stderr=True)

EXIT_USER_ERROR = 2


# C0/C1 control characters other than tab and newline (those two become spaces: the error is one line).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable_message(message: str) -> str:
    """A message safe to show on one line: names from data can hold control characters (terminal
    escapes), undecodable bytes (surrogates from non-UTF-8 file names) and `[...]` that rich would
    read as markup."""
    text = message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # any lone surrogate left over
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return escape(" ".join(text.splitlines()).replace("\t", " "))


def fail(message: str) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {printable_message(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USER_ERROR)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TopofrError (and a missing input file) into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PreflightError as exc:
            if os.environ.get("RANK", "0") != "0":  # a torchrun worker: rank 0 says it for all
                raise typer.Exit(EXIT_USER_ERROR) from None
            raise fail(str(exc)) from None
        except TopofrError as exc:
            raise fail(str(exc)) from None
        except FileNotFoundError as exc:
            raise fail(f"{exc.filename}: no such file or directory") from None
        except OSError as exc:
            if exc.filename is None:  # not about a file the user named: a real fault, keep the traceback
                raise
            raise fail(f"{exc.filename}: {exc.strerror or exc}") from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper


def warn(message: str) -> None:
    """A yellow line for a result that is computed but should not be trusted as it stands."""
    console.print(f"[yellow]warning:[/] {printable_message(message)}", highlight=False, soft_wrap=True)


def degenerate_warning(what: str, mean_cosine: float) -> str:
    """The one wording for a collapsed model (`evaluation.degeneracy`), whichever command finds it."""
    from topofr_cli.evaluation.degeneracy import degenerate_message  # numpy: loaded when it is needed

    return degenerate_message(what, mean_cosine)
