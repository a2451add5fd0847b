"""`topofr train`."""

from __future__ import annotations

from topofr_cli.cli.common import not_built


def train() -> None:
    """(Not built yet) See issue 3."""
    raise not_built("train", "issue 3")
