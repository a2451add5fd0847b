"""`topofr eval` (verification .bin files, IJB-B/C 1:1, dataset embeddings) and `topofr export` (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from topofr_cli.cli.common import console, degenerate_warning, user_errors, warn
from topofr_cli.cli.ijb_identification import protocol_option, rule_option, show_identification
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.raw_photos import DETECT_HELP, DETECTOR_HELP
from topofr_cli.cli.render import RichProgress

if TYPE_CHECKING:  # torch and the evaluation stack load when the command runs, not for --help
    from topofr_cli.commands.eval_report import IJBReport, VerificationReport


def _show_verification(report: VerificationReport) -> None:
    table = Table(title="verification (10-fold cross-validation)")
    for column in ("set", "pairs", "accuracy", "best threshold", "VAL@FAR=1e-3", "AUC"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, result in report.results.items():
        table.add_row(
            name,
            str(result.num_pairs),
            f"{100 * result.accuracy_mean:.2f} ± {100 * result.accuracy_std:.2f}",
            f"{result.best_threshold:.3f}",
            f"{100 * result.val:.2f} ± {100 * result.val_std:.2f}" if result.val_resolvable else "n/a",
            f"{result.auc:.4f}",
        )
    console.print(table)
    for name, result in report.results.items():
        if result.degenerate:
            warn(degenerate_warning(name, result.mean_cosine))
        if not result.val_resolvable:
            warn(
                f"{name}: VAL@FAR=1e-3 is not resolvable: each fold's threshold is set on as few as "
                f"{result.threshold_impostors} impostor pairs, fewer than 1/FAR = 1000"
            )
    console.print(f"wrote {report.csv_path} and {report.roc_path}", highlight=False)


def _show_ijb(report: IJBReport) -> None:
    result = report.result
    table = Table(
        title=f"{report.target} 1:1 — {result.num_images} images, {result.num_templates} templates, "
        f"{len(result.scores)} pairs"
    )
    for far in result.tar_at_far:
        table.add_column(f"TAR@FAR={far:.0e}", justify="right")
    table.add_row(*(f"{100 * tar:.2f}" for tar in result.tar_at_far.values()))
    console.print(table)
    console.print(f"AUC {result.auc:.5f}", highlight=False)
    console.print(
        f"wrote {report.scores_path}, {report.tar_far_path.name} and {report.roc_path.name}", highlight=False
    )


@user_errors
@prints_json
def evaluate(
    model: Path = typer.Argument(
        ...,
        help="Model file: a topofr checkpoint, the reference's model.pt, an insightface "
        "backbone .pth, or an .onnx file; or a run folder (its latest checkpoint).",
    ),
    bins: list[Path] = typer.Option(
        None,
        "--bin",
        help="Verification .bin (lfw.bin, cfp_fp.bin, …); repeat "
        "for several. Default: the held-out .bin of the model's training set.",
    ),
    ijb: Path | None = typer.Option(
        None,
        "--ijb",
        help="IJB-B/C root with meta/ and loose_crop/: run the 1:1 template verification "
        "(TAR at FAR 1e-6 … 1e-1) and/or 1:N identification (--ijb-protocol).",
    ),
    target: str = typer.Option("IJBC", "--target", help="IJB protocol: IJBC or IJBB."),
    ijb_protocol: str = protocol_option(),
    ijb_1n_rule: str = rule_option(),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset to embed (packed, RecordIO or image folder); needs --embeddings."
    ),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Output .parquet (index, label, source_key, embedding) or .npy [N, E] for --data.",
    ),
    detect: bool = typer.Option(False, "--detect", help=DETECT_HELP),
    detector: str = typer.Option("dlib-hog", "--detector", help=DETECTOR_HELP),
    batch_size: int = typer.Option(
        64, "--batch-size", min=1, help="Images per forward pass (twice that with flip)."
    ),
    no_flip: bool = typer.Option(False, "--no-flip", help="Embed the image only, not image + mirror."),
    unit_features: bool = typer.Option(
        False,
        "--unit-features",
        help="IJB: L2-normalise each image's "
        "feature before pooling it into its template, so that its norm no longer "
        "weights it (insightface use_norm_score=False). Default: norm-weighted.",
    ),
    no_norm: bool = typer.Option(False, "--no-norm", hidden=True, help="Old name of --unit-features."),
    no_detector_score: bool = typer.Option(
        False, "--no-detector-score", help="IJB: do not weight image features by the detector score."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for CSV/PNG/NPY results. Default: "
        "RUN/eval/step_N/ beside the run of RUN/checkpoints/step_N.pt, else "
        "topofr-eval/<model file stem>/.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace earlier results in the output folder."
    ),
    network: str | None = typer.Option(
        None,
        "--network",
        help="Architecture (r18 r34 r50 r100 r200 mbf) when "
        "the file does not say; inferred from the keys otherwise.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", min=0, help="Image-decoding worker processes."),
    num_workers: int | None = typer.Option(
        None, "--num-workers", min=0, hidden=True, help="Old name of --workers."
    ),
    figure_format: str = typer.Option("png", "--figure-format", help="ROC figures as png, pdf or svg."),
    json_out: bool = json_option(),
) -> dict[str, Any]:
    """Evaluate a face model: verification .bin files, IJB-B/C 1:1 and 1:N, or write dataset embeddings."""
    from topofr_cli.commands.evaluate import evaluate as run_evaluation

    result = run_evaluation(
        model,
        bins=bins,
        ijb=ijb,
        target=target,
        ijb_protocol=ijb_protocol,
        ijb_1n_rule=ijb_1n_rule,
        data=data,
        embeddings=embeddings,
        detector=detector if detect else None,
        out=out,
        overwrite=overwrite,
        network=network,
        flip=not no_flip,
        unit_features=unit_features or no_norm,
        detector_score=not no_detector_score,
        batch_size=batch_size,
        device=device,
        workers=workers if num_workers is None else num_workers,
        figure_format=figure_format,
        progress=RichProgress(console),
    )
    if result.verification is not None:
        _show_verification(result.verification)
    if result.ijb is not None:
        _show_ijb(result.ijb)
    if result.identification is not None:
        show_identification(result.identification)
    if result.embeddings is not None:
        written = result.embeddings
        console.print(
            f"wrote {written.count} embeddings of size {written.embedding_size} to {written.path}",
            highlight=False,
        )
    return result.to_json()


@user_errors
def export(
    model: Path = typer.Argument(
        ...,
        help="Model file: a topofr checkpoint, the reference's model.pt or an insightface backbone .pth; "
        "or a run folder (its latest checkpoint).",
    ),
    out: Path = typer.Argument(
        ...,
        help="Output .onnx file (backbone only, dynamic batch axis; replaced if it exists, never an input).",
    ),
    network: str | None = typer.Option(None, "--network", help="Architecture when the file does not say."),
    tolerance: float = typer.Option(
        1e-4,
        "--tolerance",
        help="Largest accepted |onnxruntime − PyTorch| "
        "on the check batch (fp32), times the output magnitude when above 1.",
    ),
) -> None:
    """Export the backbone to ONNX and check it against PyTorch with onnxruntime."""
    from topofr_cli.commands.export import export_model

    report = export_model(
        model, out, network=network, tolerance=tolerance, progress=RichProgress(console)
    ).report
    console.print(
        f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {report.exporter} exporter); "
        f"max |onnxruntime − torch| = {report.max_abs_diff:.2e} on a batch of "
        f"{report.check_batch_size} (outputs up to {report.output_scale:.3g})",
        highlight=False,
    )
