"""The `topofr` Typer application: registers one thin command module per subcommand."""

from __future__ import annotations

import typer

from topofr_cli import __version__
from topofr_cli.cli import analyze_topology, bench, evaluate, hard_samples, prepare, train

app = typer.Typer(
    name="topofr",
    help="TopoFR face recognition toolkit: prepare data, train with topology alignment, "
    "evaluate, and inspect the topology and the hardest samples of your data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"topofr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """TopoFR face recognition toolkit."""


app.add_typer(prepare.app, name="prepare")
app.command("train", context_settings={"allow_extra_args": False})(train.train)
app.command("eval")(evaluate.evaluate)
app.command("export")(evaluate.export)
app.command("analyze-topology")(analyze_topology.analyze_topology)
app.command("hard-samples")(hard_samples.hard_samples)
app.command("bench")(bench.bench)


def main() -> None:
    app()
