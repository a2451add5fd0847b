"""`topofr eval` (verification .bin files, IJB-B/C 1:1, dataset embeddings) and `topofr export` (ONNX)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from topofr_cli.cli.common import console, user_errors
from topofr_cli.errors import TopofrError


@contextlib.contextmanager
def _image_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich bar over images; yields the `on_images(n)` callback the evaluators call per batch."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TopofrError(f"--device {device}: no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise TopofrError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return device


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary sibling and rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _run_verification(loaded, bins: list[Path], *, batch_size, flip, device, num_workers, out: Path) -> None:
    from topofr_cli.data.bins import read_bin
    from topofr_cli.evaluation.verification import evaluate_pairs
    from topofr_cli.plots.roc import plot_roc

    results = {}
    for path in bins:
        pairs = read_bin(path)
        with _image_progress(f"verify {path.name}", len(pairs.images)) as on_images:
            name = path.stem if path.stem not in results else str(path)  # same file name twice
            results[name] = evaluate_pairs(loaded.backbone, pairs, path, batch_size=batch_size, flip=flip,
                                           device=device, num_workers=num_workers, on_images=on_images)
    table = Table(title="verification (10-fold, REFERENCE §3.3)")
    for column in ("set", "pairs", "accuracy", "best threshold", "VAL@FAR=1e-3", "AUC"):
        table.add_column(column, justify="left" if column == "set" else "right")
    rows = []
    for name, result in results.items():
        table.add_row(name, str(result.num_pairs), f"{100 * result.accuracy_mean:.2f} ± {100 * result.accuracy_std:.2f}",
                      f"{result.best_threshold:.3f}", f"{100 * result.val:.2f} ± {100 * result.val_std:.2f}",
                      f"{result.auc:.4f}")
        s = result.summary()
        rows.append([name] + [f"{s[k]:.6g}" if isinstance(s[k], float) else s[k] for k in s])
    console.print(table)
    header = ["set", *results[next(iter(results))].summary()]
    _write_text(out / "verification.csv", _csv_text(header, rows))
    plot_roc({name: (r.fpr, r.tpr) for name, r in results.items()}, out / "verification_roc.png",
             title="verification ROC (mean over folds)")
    console.print(f"wrote {out / 'verification.csv'} and {out / 'verification_roc.png'}", highlight=False)


def _run_ijb(loaded, root: Path, target: str, *, flip, use_norm_score, use_detector_score, batch_size, device,
             num_workers, out: Path) -> None:
    from topofr_cli.evaluation.ijb import check_target, evaluate_ijb
    from topofr_cli.evaluation.ijb_protocol import read_ijb_meta
    from topofr_cli.plots.roc import plot_roc

    target = check_target(target)
    meta = read_ijb_meta(root, target)
    with _image_progress(f"{target} images", len(meta.image_names)) as on_images:
        result = evaluate_ijb(loaded.backbone, root, target, flip=flip, use_norm_score=use_norm_score,
                              use_detector_score=use_detector_score, batch_size=batch_size,
                              num_workers=num_workers, device=device, meta=meta, on_images=on_images)
    table = Table(title=f"{target} 1:1 — {result.num_images} images, {result.num_templates} templates, "
                  f"{len(result.scores)} pairs")
    for far in result.tar_at_far:
        table.add_column(f"TAR@FAR={far:.0e}", justify="right")
    table.add_row(*(f"{100 * tar:.2f}" for tar in result.tar_at_far.values()))
    console.print(table)
    console.print(f"AUC {result.auc:.5f}", highlight=False)
    prefix = target.lower()
    _write_npy(out / f"{prefix}_scores.npy", result.scores)
    _write_text(out / f"{prefix}_tar_far.csv", _csv_text(
        ["far", "tar"], [[f"{far:g}", f"{tar:.6f}"] for far, tar in result.tar_at_far.items()]))
    plot_roc({target: (result.fpr, result.tpr)}, out / f"{prefix}_roc.png", title=f"{target} 1:1 ROC",
             log_far=True, far_marks={target: result.tar_at_far})
    console.print(f"wrote {out / (prefix + '_scores.npy')}, {prefix}_tar_far.csv and {prefix}_roc.png",
                  highlight=False)


def _run_embeddings(loaded, data: Path, embeddings: Path, *, flip, batch_size, device, num_workers) -> None:
    from topofr_cli.data import open_dataset
    from topofr_cli.evaluation.embeddings_out import write_embeddings

    dataset = open_dataset(data)
    with _image_progress(f"embed {Path(data).name}", len(dataset)) as on_images:
        report = write_embeddings(loaded.backbone, dataset, embeddings, flip=flip, batch_size=batch_size,
                                  num_workers=num_workers, device=device, on_images=on_images)
    console.print(f"wrote {report.count} embeddings of size {report.embedding_size} to {report.path}",
                  highlight=False)


@user_errors
def evaluate(
    model: Path = typer.Argument(..., help="Model file: a topofr checkpoint, REF's model.pt, an insightface "
                                 "backbone .pth, or an .onnx file."),
    bins: list[Path] = typer.Option(None, "--bin", help="Verification .bin (lfw.bin, cfp_fp.bin, …); repeat "
                                    "for several. Default: the held-out .bin of the model's training set."),
    ijb: Path | None = typer.Option(None, "--ijb", help="IJB-B/C root with meta/ and loose_crop/: run the "
                                    "1:1 template verification (TAR at FAR 1e-6 … 1e-1)."),
    target: str = typer.Option("IJBC", "--target", help="IJB protocol: IJBC or IJBB."),
    data: Path | None = typer.Option(None, "--data", help="Dataset to embed (packed, RecordIO or image "
                                     "folder); needs --embeddings."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help="Output .parquet (index, label, "
                                           "source_key, embedding) or .npy [N, E] for --data."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass (twice that with flip)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Embed the image only, not image + mirror."),
    no_norm: bool = typer.Option(False, "--no-norm", help="IJB: L2-normalise each image feature before "
                                 "pooling (insightface use_norm_score=False); default keeps the norm."),
    no_detector_score: bool = typer.Option(False, "--no-detector-score", help="IJB: do not weight image "
                                           "features by the detector score."),
    out: Path | None = typer.Option(None, "--out", help="Folder for CSV/PNG/NPY results. Default: "
                                    "topofr-eval/<model file name>."),
    network: str | None = typer.Option(None, "--network", help="Architecture (r18 r34 r50 r100 r200 mbf) when "
                                       "the file does not say; inferred from the keys otherwise."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    num_workers: int = typer.Option(2, "--num-workers", min=0, help="Image-decoding worker processes."),
) -> None:
    """Evaluate a face model: verification .bin files, IJB-B/C 1:1, or write dataset embeddings."""
    from topofr_cli.evaluation.model_io import load_model
    from topofr_cli.evaluation.verification import default_verification_bins

    if (data is None) != (embeddings is None):
        raise TopofrError("--data and --embeddings go together (dataset in, embeddings file out)")
    device = _resolve_device(device)
    loaded = load_model(model, network)
    console.print(f"model {model}: {loaded.kind}, {loaded.network}, embedding {loaded.embedding_size}"
                  + (f", step {loaded.step}" if loaded.step is not None else ""), highlight=False)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    out = out if out is not None else Path("topofr-eval") / model.stem
    flip = not no_flip
    if not bins and ijb is None and data is None:
        bins = default_verification_bins(loaded.recipe, model)
    if bins:
        _run_verification(loaded, list(bins), batch_size=batch_size, flip=flip, device=device,
                          num_workers=num_workers, out=out)
    if ijb is not None:
        _run_ijb(loaded, ijb, target, flip=flip, use_norm_score=not no_norm,
                 use_detector_score=not no_detector_score, batch_size=batch_size, device=device,
                 num_workers=num_workers, out=out)
    if data is not None:
        _run_embeddings(loaded, data, embeddings, flip=flip, batch_size=batch_size, device=device,
                        num_workers=num_workers)


@user_errors
def export(
    model: Path = typer.Argument(..., help="Model file: a topofr checkpoint, REF's model.pt or an "
                                 "insightface backbone .pth."),
    out: Path = typer.Argument(..., help="Output .onnx file (backbone only, dynamic batch axis)."),
    network: str | None = typer.Option(None, "--network", help="Architecture when the file does not say."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest accepted |onnxruntime − PyTorch| "
                                    "on the check batch (fp32), times the output magnitude when above 1."),
) -> None:
    """Export the backbone to ONNX and check it against PyTorch with onnxruntime."""
    from topofr_cli.evaluation.export import export_onnx
    from topofr_cli.evaluation.model_io import load_model

    loaded = load_model(model, network)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    with console.status(f"exporting {loaded.network} to ONNX and checking it with onnxruntime"):
        report = export_onnx(loaded.backbone, out, tolerance=tolerance)
    console.print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {report.exporter} exporter); "
                  f"max |onnxruntime − torch| = {report.max_abs_diff:.2e} on a batch of "
                  f"{report.check_batch_size} (outputs up to {report.output_scale:.3g})", highlight=False)
