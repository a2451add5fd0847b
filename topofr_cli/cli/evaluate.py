"""`topofr eval` (verification .bin files, IJB-B/C 1:1, dataset embeddings) and `topofr export` (ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from topofr_cli.artifacts.outputs import REPORT, check_output, default_output, provenance
from topofr_cli.cli.common import console, degenerate_warning, user_errors, warn
from topofr_cli.cli.ijb_identification import check_protocol, protocol_option, rule_option
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.raw_photos import DETECT_HELP, DETECTOR_HELP, open_data
from topofr_cli.cli.render import RichProgress
from topofr_cli.errors import TopofrError

if TYPE_CHECKING:  # torch and the evaluation stack load when the command runs, not for --help
    from topofr_cli.evaluation.report import IJBReport, VerificationReport


def _show_verification(report: VerificationReport) -> None:
    table = Table(title="verification (10-fold, docs/method.md §3.3)")
    for column in ("set", "pairs", "accuracy", "best threshold", "VAL@FAR=1e-3", "AUC"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, result in report.results.items():
        table.add_row(
            name,
            str(result.num_pairs),
            f"{100 * result.accuracy_mean:.2f} ± {100 * result.accuracy_std:.2f}",
            f"{result.best_threshold:.3f}",
            f"{100 * result.val:.2f} ± {100 * result.val_std:.2f}",
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


def _ijb_summary(report: IJBReport) -> dict[str, Any]:
    result = report.result
    return {
        "target": report.target,
        "images": result.num_images,
        "templates": result.num_templates,
        "pairs": len(result.scores),
        "auc": result.auc,
        "tar_at_far": {f"{far:g}": tar for far, tar in result.tar_at_far.items()},
        "scores": report.scores_path,
        "tar_far_csv": report.tar_far_path,
        "roc": report.roc_path,
    }


@user_errors
@prints_json
def evaluate(
    model: Path = typer.Argument(
        ...,
        help="Model file: a topofr checkpoint, the reference's model.pt, an insightface "
        "backbone .pth, or an .onnx file.",
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
        help="IJB-B/C root with meta/ and loose_crop/: run the "
        "1:1 template verification (TAR at FAR 1e-6 … 1e-1).",
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
    from topofr_cli.evaluation.model_io import load_model
    from topofr_cli.evaluation.report import (
        VERIFICATION_CSV,
        embeddings_report,
        ijb_report,
        ijb_tar_far_name,
        verification_report,
    )
    from topofr_cli.evaluation.verification import default_verification_bins

    if (data is None) != (embeddings is None):
        raise TopofrError("--data and --embeddings go together (dataset in, embeddings file out)")
    if detect and data is None:
        raise TopofrError("--detect applies to --data (a folder of raw photos)")
    from topofr_cli.devices import resolve_device
    from topofr_cli.plots.style import FigureMeta, check_format, model_label

    check_format(figure_format)
    run_1to1, run_1toN = check_protocol(ijb_protocol, ijb_1n_rule)
    torch_device = resolve_device(device)
    num_workers = workers if num_workers is None else num_workers
    loaded = load_model(model, network)
    console.print(
        f"model {model}: {loaded.kind}, {loaded.network}, embedding {loaded.embedding_size}"
        + (f", step {loaded.step}" if loaded.step is not None else ""),
        highlight=False,
    )
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    flip = not no_flip
    if not bins and ijb is None and data is None:
        bins = default_verification_bins(loaded.recipe, model)
    out = out if out is not None else default_output("eval", model)
    results = ([VERIFICATION_CSV] if bins else []) + ([ijb_tar_far_name(target)] if ijb and run_1to1 else [])
    results += [f"{target.strip().lower()}_1n.csv"] if ijb and run_1toN else []  # 1:N (issue 21)
    if results:
        check_output(out, REPORT, overwrite=overwrite, results=results)
    source = provenance(model, step=loaded.step, network=loaded.network, flip=flip)
    progress = RichProgress(console)
    figures = {
        "figure": FigureMeta(model=model_label(model), step=loaded.step),
        "figure_format": figure_format,
    }
    summary: dict[str, Any] = {
        "model": model,
        "kind": loaded.kind,
        "network": loaded.network,
        "step": loaded.step,
        "embedding_size": loaded.embedding_size,
        "flip": flip,
    }
    if bins:
        verification = verification_report(
            loaded.backbone,
            list(bins),
            out,
            batch_size=batch_size,
            flip=flip,
            device=torch_device,
            num_workers=num_workers,
            provenance=source,
            progress=progress,
            **figures,
        )
        _show_verification(verification)
        summary["verification"] = {
            "sets": {name: r.summary() for name, r in verification.results.items()},
            "csv": verification.csv_path,
            "roc": verification.roc_path,
        }
    ijb_result = None
    if ijb is not None and run_1to1:
        ijb_result = ijb_report(
            loaded.backbone,
            ijb,
            target,
            out,
            flip=flip,
            use_norm_score=not (unit_features or no_norm),
            use_detector_score=not no_detector_score,
            batch_size=batch_size,
            device=torch_device,
            num_workers=num_workers,
            provenance=source,
            progress=progress,
            **figures,
        )
        _show_ijb(ijb_result)
        summary["ijb"] = _ijb_summary(ijb_result)
    if ijb is not None and run_1toN:  # 1:N (issue 21): reuses the 1:1 run's templates under `both`
        from topofr_cli.cli.ijb_identification import identification

        summary["ijb_1n"] = identification(
            loaded.backbone,
            ijb,
            target,
            out,
            rule=ijb_1n_rule,
            templates=ijb_result.result.templates if ijb_result else None,
            flip=flip,
            use_norm_score=not (unit_features or no_norm),
            use_detector_score=not no_detector_score,
            batch_size=batch_size,
            device=torch_device,
            num_workers=num_workers,
            provenance=source,
            progress=progress,
            **figures,
        )
    if data is not None:
        dataset = open_data(
            data, detector if detect else None, workers=max(1, num_workers), progress=progress
        )
        written = embeddings_report(
            loaded.backbone,
            data,
            embeddings,
            dataset=dataset,
            flip=flip,
            batch_size=batch_size,
            device=torch_device,
            num_workers=num_workers,
            progress=progress,
        )
        console.print(
            f"wrote {written.count} embeddings of size {written.embedding_size} to {written.path}",
            highlight=False,
        )
        summary["embeddings"] = {
            "path": written.path,
            "count": written.count,
            "embedding_size": written.embedding_size,
        }
    return summary


@user_errors
def export(
    model: Path = typer.Argument(
        ..., help="Model file: a topofr checkpoint, the reference's model.pt or an insightface backbone .pth."
    ),
    out: Path = typer.Argument(..., help="Output .onnx file (backbone only, dynamic batch axis)."),
    network: str | None = typer.Option(None, "--network", help="Architecture when the file does not say."),
    tolerance: float = typer.Option(
        1e-4,
        "--tolerance",
        help="Largest accepted |onnxruntime − PyTorch| "
        "on the check batch (fp32), times the output magnitude when above 1.",
    ),
) -> None:
    """Export the backbone to ONNX and check it against PyTorch with onnxruntime."""
    from topofr_cli.evaluation.export import export_onnx
    from topofr_cli.evaluation.model_io import load_model

    loaded = load_model(model, network)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    with console.status(f"exporting {loaded.network} to ONNX and checking it with onnxruntime"):
        report = export_onnx(loaded.backbone, out, tolerance=tolerance)
    console.print(
        f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {report.exporter} exporter); "
        f"max |onnxruntime − torch| = {report.max_abs_diff:.2e} on a batch of "
        f"{report.check_batch_size} (outputs up to {report.output_scale:.3g})",
        highlight=False,
    )
