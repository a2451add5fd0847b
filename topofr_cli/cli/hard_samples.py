"""`topofr hard-samples`."""

from __future__ import annotations

from topofr_cli.cli.common import not_built


def hard_samples() -> None:
    """(Not built yet) See issue 7."""
    raise not_built("hard-samples", "issue 7")
