"""`topofr hard-samples`: rank a dataset's images by structure damage score with a trained model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from topofr_cli.cli.common import console, degenerate_warning, user_errors, warn
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.raw_photos import DETECT_HELP, DETECTOR_HELP
from topofr_cli.cli.render import bars
from topofr_cli.commands.hard_samples_report import DISTRIBUTIONS, GALLERY, GALLERY_MAX_ROWS, SUMMARY_JSON

if TYPE_CHECKING:  # torch and the data readers load when the command runs, not for --help
    from topofr_cli.data.dataset import FaceDataset
    from topofr_cli.hardness.ranking import HardnessTable


class ModeChoice(str, Enum):
    noise = "noise"
    paper = "paper"


class GumScopeChoice(str, Enum):
    dataset = "dataset"
    batch = "batch"


def _top_table(table: HardnessTable, dataset: FaceDataset, top: int) -> Table:
    view = Table(
        title=f"Top {top} images by structure damage score (p_gt from the {table.mode} mode)",
        header_style="bold",
    )
    for name, justify in (
        ("rank", "right"),
        ("index", "right"),
        ("key", "left"),
        ("label", "right"),
        ("pred", "right"),
        ("p_gt", "right"),
        ("entropy", "right"),
        ("γ", "right"),
        ("SDS", "right"),
    ):
        view.add_column(name, justify=justify, overflow="fold")
    for rank, index in enumerate(table.ranking()[:top], start=1):
        label, guess = int(table.labels[index]), int(table.predicted[index])
        view.add_row(
            str(rank),
            str(int(index)),
            dataset.source_key(int(index)),
            str(label),
            str(guess) if guess == label else f"[bold red]{guess}[/]",
            f"{table.p_true[index]:.3f}",
            f"{table.entropy[index]:.3f}",
            f"{table.gamma[index]:.3f}",
            f"{table.sds[index]:.4f}",
        )
    return view


@user_errors
@prints_json
def hard_samples(
    model: Path = typer.Argument(
        ...,
        help="Trained checkpoint with its classifier (checkpoints/step_*.pt), or a run folder (its latest checkpoint).",
    ),
    data: Path = typer.Option(
        ..., "--data", "-d", help="Dataset the model was trained on: packed dir, RecordIO, or image folder."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Directory for sds.parquet, sds.csv, summary.json and the PNG figures. "
        "Default: RUN/hard-samples/step_N/ beside the run of RUN/checkpoints/"
        "step_N.pt, else topofr-hard-samples/<model file stem>/.",
    ),
    mode: ModeChoice = typer.Option(
        ModeChoice.noise,
        "--mode",
        help="Where the class probabilities come from. noise: the scaled cosines, as at inference (a "
        "mislabelled image gets a low p_gt, a clean one a high p_gt: finds label noise). paper: the "
        "training margin logits, as the SDE weights see them in training; a "
        "large margin gives clean images a low p_gt too.",
    ),
    top: int = typer.Option(
        20,
        "--top",
        "-k",
        min=1,
        help=f"How many of the highest-SDS images to print and show (gallery: at most {GALLERY_MAX_ROWS}).",
    ),
    gum_scope: GumScopeChoice = typer.Option(
        GumScopeChoice.dataset,
        "--gum-scope",
        help="Fit the Gaussian–uniform mixture over the whole dataset, or per batch as in training.",
    ),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="Where to run the model: auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loading worker processes."),
    typical: int = typer.Option(
        3, "--typical", min=1, help="Typical images per identity beside each gallery image."
    ),
    write_clean: Path | None = typer.Option(
        None,
        "--write-clean",
        help="Also write a packed copy of the dataset without the flagged images (needs --drop-top or --drop-above).",
    ),
    drop_top: int | None = typer.Option(
        None, "--drop-top", min=0, help="With --write-clean: drop the K highest-SDS images."
    ),
    drop_above: float | None = typer.Option(
        None, "--drop-above", help="With --write-clean: drop every image with SDS above X."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace earlier results in --out and an existing --write-clean directory."
    ),
    detect: bool = typer.Option(False, "--detect", help=DETECT_HELP),
    detector: str = typer.Option("dlib-hog", "--detector", help=DETECTOR_HELP),
    figure_format: str = typer.Option("png", "--figure-format", help="Figures as png, pdf or svg."),
    margin: bool | None = typer.Option(
        None, "--margin/--no-margin", hidden=True, help="Old names of --mode paper / --mode noise."
    ),
    json_out: bool = json_option(),
) -> dict[str, Any]:
    """Rank every image by structure damage score (SDS = w1 · w2) to find label noise."""
    from topofr_cli.commands.hard_samples import hard_samples as rank_images

    result = rank_images(
        model,
        data,
        out=out,
        mode=mode.value if margin is None else ("paper" if margin else "noise"),
        top=top,
        gum_scope=gum_scope.value,
        batch_size=batch_size,
        device=device,
        workers=workers,
        typical=typical,
        write_clean=write_clean,
        drop_top=drop_top,
        drop_above=drop_above,
        overwrite=overwrite,
        detector=detector if detect else None,
        figure_format=figure_format,
        progress=bars(console),
    )
    console.print(_top_table(result.table, result.dataset, top))
    if result.table.degenerate:
        warn(
            degenerate_warning(str(result.model), result.table.mean_cosine)
            + "; the ranking reflects no learned identities"
        )
    console.print(
        f"wrote {result.out}/{{sds.parquet, sds.csv, {DISTRIBUTIONS}.{figure_format}, "
        f"{GALLERY}.{figure_format}, {SUMMARY_JSON}}}"
    )
    if result.clean is not None:
        clean = result.clean
        console.print(f"wrote {clean.path}: kept {clean.kept:,} images, dropped {clean.dropped:,}")
    return result.to_json()
