"""Helpers shared by the CLI commands: consoles and the one-line error convention."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from topofr_cli.errors import TopofrError

console = Console()
err_console = Console(stderr=True)

EXIT_USER_ERROR = 2


def fail(message: str) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # paths may hold [..]
    return typer.Exit(EXIT_USER_ERROR)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TopofrError (and a missing input file) into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TopofrError as exc:
            raise fail(str(exc)) from None
        except FileNotFoundError as exc:
            raise fail(f"{exc.filename}: no such file or directory") from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper


def not_built(command: str, issue: str) -> typer.Exit:
    """For commands whose implementation has not landed yet: say so and exit non-zero."""
    return fail(f"`topofr {command}` is not built yet (tracked in {issue}).")
