"""`topofr hard-samples`: rank a dataset's images by structure damage score with a trained model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from topofr_cli.artifacts.outputs import REPORT, check_output, default_output, provenance
from topofr_cli.cli.common import console, degenerate_warning, user_errors, warn
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.raw_photos import DETECT_HELP, DETECTOR_HELP, open_data
from topofr_cli.cli.render import bars
from topofr_cli.devices import resolve_device
from topofr_cli.hardness.report import DISTRIBUTIONS, GALLERY, GALLERY_MAX_ROWS, SUMMARY_JSON, summary

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


def _top_rows(table: HardnessTable, dataset: FaceDataset, top: int) -> list[dict[str, Any]]:
    return [
        {
            "rank": rank,
            "index": int(index),
            "key": dataset.source_key(int(index)),
            "label": int(table.labels[index]),
            "predicted": int(table.predicted[index]),
            "p_gt": float(table.p_true[index]),
            "entropy": float(table.entropy[index]),
            "gamma": float(table.gamma[index]),
            "sds": float(table.sds[index]),
        }
        for rank, index in enumerate(table.ranking()[:top], start=1)
    ]


@user_errors
@prints_json
def hard_samples(
    model: Path = typer.Argument(..., help="Trained checkpoint with its classifier (checkpoints/step_*.pt)."),
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
        "training margin logits, as the SDE weights see them in training (docs/method.md §1.3); a "
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
    """Rank every image by structure damage score (SDS = w1 · w2, docs/method.md §1.3) to find label noise."""
    from topofr_cli.evaluation.model_io import load_model
    from topofr_cli.hardness.clean import check_clean_options, verification_bins_to_copy, write_clean_dataset
    from topofr_cli.hardness.ranking import check_inputs, score_dataset
    from topofr_cli.hardness.report import write_report
    from topofr_cli.hardness.table_io import CSV_NAME, PARQUET_NAME
    from topofr_cli.plots.style import check_format

    check_format(figure_format)
    check_clean_options(write_clean, drop_top=drop_top, drop_above=drop_above, overwrite=overwrite)
    out = out if out is not None else default_output("hard-samples", model)
    check_output(out, REPORT, overwrite=overwrite, results=[PARQUET_NAME, CSV_NAME, SUMMARY_JSON])
    chosen = mode.value if margin is None else ("paper" if margin else "noise")

    torch_device = resolve_device(device)
    loaded = load_model(model)
    dataset = open_data(data, detector if detect else None, workers=max(1, workers), progress=bars(console))
    check_inputs(loaded, dataset, str(model), str(data))
    if write_clean is not None:
        verification_bins_to_copy(dataset)  # refuse unsafe names in meta.json before any output is written
    table = score_dataset(
        loaded,
        dataset,
        batch_size=batch_size,
        gum_scope=gum_scope.value,
        device=torch_device,
        num_workers=workers,
        mode=chosen,
        progress=bars(console),
    )

    source = provenance(model, step=loaded.step, network=loaded.network, flip=False)
    with console.status("writing the ranking and figures"):
        write_report(
            table,
            dataset,
            out,
            provenance=source,
            data_path=data,
            top=top,
            typical=typical,
            figure_format=figure_format,
        )
    console.print(_top_table(table, dataset, top))
    if table.degenerate:
        warn(
            degenerate_warning(str(model), table.mean_cosine) + "; the ranking reflects no learned identities"
        )
    console.print(
        f"wrote {out}/{{sds.parquet, sds.csv, {DISTRIBUTIONS}.{figure_format}, {GALLERY}.{figure_format}, "
        f"{SUMMARY_JSON}}}"
    )
    results: dict[str, Any] = {
        **summary(table, source, data),
        "out": out,
        "top": _top_rows(table, dataset, top),
    }

    if write_clean is not None:
        report = write_clean_dataset(
            dataset,
            table,
            write_clean,
            drop_top=drop_top,
            drop_above=drop_above,
            overwrite=overwrite,
            progress=bars(console),
        )
        console.print(f"wrote {report.path}: kept {report.kept:,} images, dropped {report.dropped:,}")
        results["clean"] = {"path": report.path, "kept": report.kept, "dropped": report.dropped}
    return results
