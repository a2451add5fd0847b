"""`topofr eval` and `topofr export`."""

from __future__ import annotations

from topofr_cli.cli.common import not_built


def evaluate() -> None:
    """(Not built yet) See issue 5."""
    raise not_built("eval", "issue 5")


def export() -> None:
    """(Not built yet) See issue 5."""
    raise not_built("export", "issue 5")
