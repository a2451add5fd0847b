"""The `topofr` Typer application: one line per subcommand, each imported only when it runs.

`topofr --help` and `--version` read only this table, so they start without torch. The
one-line help beside each command must match the first paragraph of the command's docstring (a
test checks it).
"""

from __future__ import annotations

import typer

from topofr_cli import __version__
from topofr_cli.cli.lazy import lazy_group

COMMANDS = {  # name: ("module:attribute", one-line help)
    "prepare": (
        "topofr_cli.cli.prepare:app",
        "Bring datasets in: pack RecordIO or image folders, build .bin "
        "pair files, or generate synthetic faces.",
    ),
    "train": (
        "topofr_cli.cli.train:train",
        "Train a model from RECIPE; prints verification accuracy next to the raw-pixel baseline.",
    ),
    "eval": (
        "topofr_cli.cli.evaluate:evaluate",
        "Evaluate a face model: verification .bin files, IJB-B/C 1:1 and 1:N, or write dataset embeddings.",
    ),
    "export": (
        "topofr_cli.cli.evaluate:export",
        "Export the backbone to ONNX and check it against PyTorch with onnxruntime.",
    ),
    "analyze-topology": (
        "topofr_cli.cli.analyze_topology:analyze_topology",
        "Persistence diagrams (H0, H1) of "
        "a dataset sample in input and latent space, their distances, and the structure "
        "collapse curve of a training run.",
    ),
    "hard-samples": (
        "topofr_cli.cli.hard_samples:hard_samples",
        "Rank every image by structure damage score (SDS = w1 · w2) to find label noise.",
    ),
    "cluster": (
        "topofr_cli.cli.cluster:cluster",
        "Group faces into identities by persistence (ToMATo) or linkage; noise stays apart.",
    ),
    "bench": (
        "topofr_cli.cli.bench:bench",
        "How fast is TopoFR on this hardware, what does it cost over plain "
        "ArcFace, and is every device path right?",
    ),
}

app = typer.Typer(
    name="topofr",
    cls=lazy_group(COMMANDS),
    help="TopoFR face recognition toolkit: prepare data, train with topology alignment, "
    "evaluate, and inspect the topology and the hardest samples of your data.",
    no_args_is_help=True,
    add_completion=True,
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


def main() -> None:
    app()
