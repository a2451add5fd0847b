"""`--json`: exactly one JSON object on stdout; tables, bars and notes go to stderr meanwhile.

A command decorated with `prints_json` takes a `json_out` option (`--json`) and returns the object
to print; without `--json` the return value is ignored and the command prints as usual.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from topofr_cli.cli.common import console


def plain(value: Any) -> Any:
    """`value` as JSON types: paths as strings, numpy scalars and arrays as numbers and lists, NaN as null."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_option() -> Any:
    return typer.Option(
        False,
        "--json",
        help="Print one JSON object with the results on stdout (everything else goes to stderr).",
    )


def prints_json(func: Callable[..., dict[str, Any] | None]) -> Callable[..., None]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        if not kwargs.get("json_out"):
            func(*args, **kwargs)
            return
        previous = console.stderr
        console.stderr = True  # the shared console now writes to stderr
        try:
            result = func(*args, **kwargs)
        finally:
            console.stderr = previous
        typer.echo(json.dumps(plain(result), allow_nan=False))

    return wrapper
