"""`topofr prepare ...`: datasets in (RecordIO, image folders, pair CSVs, synthetic faces)."""

from __future__ import annotations

import typer

from topofr_cli.cli.common import not_built

app = typer.Typer(help="Bring datasets in: pack RecordIO or image folders, build .bin pair files, "
                  "or generate synthetic faces.", no_args_is_help=True)


@app.command("synthetic")
def synthetic() -> None:
    """(Not built yet) Generate a synthetic face dataset."""
    raise not_built("prepare synthetic", "issue 2")
