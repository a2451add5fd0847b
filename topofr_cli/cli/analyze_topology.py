"""`topofr analyze-topology`: persistence diagrams of a dataset sample in input and latent space."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from topofr_cli.cli.common import console, degenerate_warning, user_errors, warn
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.render import RichProgress

if TYPE_CHECKING:  # torch, gudhi, pandas and matplotlib load when the command runs, not for --help
    from topofr_cli.analysis.pipeline import AnalysisResult

MAX_TABLE_POINTS = 12  # a long run shows its first and last checkpoints on screen; all are in the files


def _number(value: float) -> str:
    return f"{value:.4g}"


def _input_table(result: AnalysisResult) -> Table:
    table = Table(
        title=f"input space of {result.sample.dataset} ({len(result.sample.indices)} samples, "
        f"{len(set(result.sample.labels.tolist()))} identities)"
    )
    for column in ("dim", "pairs", "max death", "mean persistence", "total persistence"):
        table.add_column(column, justify="right")
    for dim, diagram in result.input.diagrams.items():
        persistence = diagram[:, 1] - diagram[:, 0]
        table.add_row(
            f"H{dim}",
            str(len(diagram)),
            _number(float(diagram[:, 1].max())) if len(diagram) else "-",
            _number(float(persistence.mean())) if len(diagram) else "-",
            _number(float(persistence.sum())),
        )
    return table


def _shown_points(points: list) -> list:
    if len(points) <= MAX_TABLE_POINTS:
        return points
    half = MAX_TABLE_POINTS // 2
    return points[:half] + points[-half:]


def _distance_table(result: AnalysisResult) -> Table:
    table = Table(title="diagram distances, input vs latent (H0 without its essential class)")
    for column in ("model", "step", "space", "dim", "bottleneck", "W1", "W2"):
        table.add_column(column, justify="left" if column in ("model", "space") else "right", no_wrap=True)
    for target in result.targets:
        for point in _shown_points(target.points):
            step = "-" if point.step is None else str(point.step)
            for space, comparison in point.comparisons.items():
                for dim, d in comparison.distances.items():
                    table.add_row(
                        target.label,
                        step,
                        space,
                        f"H{dim}",
                        _number(d.bottleneck),
                        _number(d.wasserstein_1),
                        _number(d.wasserstein_2),
                    )
    return table


def _ptsa_table(result: AnalysisResult) -> Table:
    table = Table(
        title="PTSA loss forms and shared H0 pairs (MST edges), input vs latent; the model's "
        "mean cosine between different images and held-out accuracy"
    )
    for column in ("model", "step", "space", "official", "symmetric", "shared H0", "mean cos", "accuracy"):
        table.add_column(column, justify="left" if column in ("model", "space") else "right", no_wrap=True)
    for target in result.targets:
        for point in _shown_points(target.points):
            step = "-" if point.step is None else str(point.step)
            cosine = f"{point.mean_cosine:.3f}" + (" [red](degenerate)[/]" if point.degenerate else "")
            accuracy = "-" if point.verification is None else f"{point.verification.accuracy:.2%}"
            for space, comparison in point.comparisons.items():
                table.add_row(
                    target.label,
                    step,
                    space,
                    _number(comparison.ptsa_official),
                    _number(comparison.ptsa_symmetric),
                    f"{comparison.shared_h0_fraction:.1%}",
                    cosine,
                    accuracy,
                )
    return table


@user_errors
@prints_json
def analyze_topology(
    models: list[Path] = typer.Argument(
        None,
        metavar="MODEL_OR_RUN_DIR",
        help="Model files (topofr checkpoint, the reference implementation's model.pt, insightface backbone, ONNX) or run directories "
        "(RUN/checkpoints/step_*.pt: one analysis per checkpoint, plus the structure collapse curve). "
        "Omit with --no-model.",
    ),
    data: Path = typer.Option(
        ..., "--data", help="Dataset to sample: packed folder, RecordIO, or image folder."
    ),
    samples: int = typer.Option(512, "--samples", help="Number of images in the sample."),
    per_identity: int | None = typer.Option(
        None, "--per-identity", help="Take K images from each drawn identity, so identity clusters exist."
    ),
    dims: str = typer.Option("0,1", "--dims", help="Homology dimensions, comma-separated (0 and/or 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample draw (same seed, same sample)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Output directory: diagrams.parquet, distances.csv, summary.json, PNG figures. Default: beside "
        "the run (RUN/analyze-topology/, RUN/analyze-topology/step_N/ for one checkpoint), else "
        "topofr-analyze-topology/<model or dataset name>/.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier analysis in the output directory."
    ),
    no_model: bool = typer.Option(False, "--no-model", help="Analyse the input space of the dataset alone."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per forward pass when embedding."),
    device: str = typer.Option(
        "auto", "--device", help="Device for embedding and distances: auto, cpu, cuda or cuda:N."
    ),
    figure_format: str = typer.Option("png", "--figure-format", help="Figures as png, pdf or svg."),
    json_out: bool = json_option(),
) -> dict[str, Any]:
    """Persistence diagrams (H0, H1) of a dataset sample in input and latent space, their distances, and
    the structure collapse curve of a training run."""
    from topofr_cli.commands.analyze_topology import analyze_topology as run_analysis
    from topofr_cli.commands.analyze_topology import check_model_arguments

    check_model_arguments(list(models or []), no_model)
    report = run_analysis(
        data,
        list(models or []),
        samples=samples,
        per_identity=per_identity,
        dims=dims,
        seed=seed,
        out=out,
        overwrite=overwrite,
        batch_size=batch_size,
        device=device,
        figure_format=figure_format,
        progress=RichProgress(console, elapsed=True),
    )
    result = report.analysis
    console.print(_input_table(result))
    if result.targets:
        console.print(_distance_table(result))
        console.print(_ptsa_table(result))
    for target in result.targets:
        for point in target.points:
            if point.degenerate:
                step = "" if point.step is None or not target.is_run else f" step {point.step}"
                warn(
                    degenerate_warning(f"{target.label}{step}", point.mean_cosine)
                    + "; its diagram distances are not a sign of good alignment"
                )
    files = report.summary["files"]
    console.print(f"wrote {len(files)} files to [bold]{report.out}[/]: {', '.join(files)}")
    return report.to_json()
