"""`topofr analyze-topology`."""

from __future__ import annotations

from topofr_cli.cli.common import not_built


def analyze_topology() -> None:
    """(Not built yet) See issue 6."""
    raise not_built("analyze-topology", "issue 6")
