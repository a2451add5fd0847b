"""What `topofr eval` leaves on disk: verification CSV + ROC, IJB scores/TAR@FAR/ROC, dataset embeddings.

Each `*_report` function evaluates, writes its files (each to a temporary sibling, then renamed) and
returns the numbers and the paths, so the CLI only has to show them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.atomic import write_npy, write_text
from topofr_cli.evaluation.embeddings_out import EmbeddingsReport  # noqa: F401 - a result type of eval
from topofr_cli.evaluation.ijb import IJBResult
from topofr_cli.evaluation.protocol import VerificationResult
from topofr_cli.plots.style import FigureMeta
from topofr_cli.progress import SILENT, Progress

VERIFICATION_CSV = "verification.csv"
VERIFICATION_ROC = "verification_roc"  # + the figure format's suffix


@dataclass
class VerificationReport:
    results: dict[str, VerificationResult]  # by set name (the file stem; the path when two stems clash)
    csv_path: Path
    roc_path: Path


@dataclass
class IJBReport:
    target: str  # IJBB or IJBC
    result: IJBResult
    scores_path: Path
    tar_far_path: Path
    roc_path: Path


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def verification_report(
    backbone: Any,
    bins: list[Path],
    out: Path,
    *,
    batch_size: int,
    flip: bool,
    device: Any,
    num_workers: int,
    provenance: dict[str, Any] | None = None,
    progress: Progress = SILENT,
    figure: FigureMeta = FigureMeta(),
    figure_format: str = "png",
) -> VerificationReport:
    """The 10-fold protocol on each `.bin`; writes `verification.csv` and `verification_roc.<format>` in
    `out` (the exact ROC on a log FAR axis; `figure` names the model and step in its title).

    verification.csv: one row per set; `model` and `step` first, the numbers (accuracy and VAL as
    fractions), then the rest of `provenance` (`artifacts.outputs.provenance`)."""
    from topofr_cli.data.bins import read_bin
    from topofr_cli.evaluation.verification import evaluate_pairs
    from topofr_cli.plots.roc import RocCurve, exact_verification_roc, plot_roc

    results: dict[str, VerificationResult] = {}
    for path in bins:
        pairs = read_bin(path)
        task = progress.start(f"verify {path.name}", len(pairs.images), transient=True)
        try:
            name = path.stem if path.stem not in results else str(path)  # same file name twice
            results[name] = evaluate_pairs(
                backbone,
                pairs,
                path,
                batch_size=batch_size,
                flip=flip,
                device=device,
                num_workers=num_workers,
                on_images=task.advance,
            )
        finally:
            task.close()
    source = dict(provenance or {})
    first = {key: source.pop(key, None) for key in ("model", "step")}
    rows = []
    for name, result in results.items():
        numbers = result.summary()
        rows.append([_cell(v) for v in (*first.values(), name, *numbers.values(), *source.values())])
    header = [*first, "set", *results[next(iter(results))].summary(), *source]
    report = VerificationReport(results, out / VERIFICATION_CSV, out / f"{VERIFICATION_ROC}.{figure_format}")
    write_text(report.csv_path, _csv_text(header, rows))
    curves = [
        RocCurve(
            name,
            *exact_verification_roc(r.distances, r.issame),
            negatives=int((~r.issame).sum()),
            auc=r.auc,
            accuracy=(r.accuracy_mean, r.accuracy_std),
        )
        for name, r in results.items()
    ]
    figure = replace(
        figure, dataset=", ".join(results), n=sum(r.num_pairs for r in results.values()), n_label="pairs"
    )
    plot_roc(curves, figure, report.roc_path, what="verification ROC", figure_format=figure_format)
    return report


def ijb_tar_far_name(target: str) -> str:
    """The file that holds an IJB run's result (TAR at each FAR) in the output folder."""
    return f"{target.strip().lower()}_tar_far.csv"


def ijb_report(
    backbone: Any,
    root: Path,
    target: str,
    out: Path,
    *,
    flip: bool,
    use_norm_score: bool,
    use_detector_score: bool,
    batch_size: int,
    device: Any,
    num_workers: int,
    provenance: dict[str, Any] | None = None,
    progress: Progress = SILENT,
    figure: FigureMeta = FigureMeta(),
    figure_format: str = "png",
) -> IJBReport:
    """IJB-B/C 1:1 verification; writes `<target>_scores.npy`, `_tar_far.csv` and `_roc.<format>` in `out`."""
    import numpy as np

    from topofr_cli.evaluation.ijb import check_target, evaluate_ijb
    from topofr_cli.evaluation.ijb_protocol import read_ijb_meta
    from topofr_cli.plots.roc import RocCurve, plot_roc

    target = check_target(target)
    meta = read_ijb_meta(root, target)
    task = progress.start(f"{target} images", len(meta.image_names), transient=True)
    try:
        result = evaluate_ijb(
            backbone,
            root,
            target,
            flip=flip,
            use_norm_score=use_norm_score,
            use_detector_score=use_detector_score,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            meta=meta,
            on_images=task.advance,
        )
    finally:
        task.close()
    prefix = target.lower()
    report = IJBReport(
        target,
        result,
        out / f"{prefix}_scores.npy",
        out / ijb_tar_far_name(target),
        out / f"{prefix}_roc.{figure_format}",
    )
    write_npy(report.scores_path, result.scores)
    source = dict(provenance or {})
    first = {key: source.pop(key, None) for key in ("model", "step")}
    write_text(
        report.tar_far_path,
        _csv_text(
            [*first, "far", "tar", *source],
            [
                [*map(_cell, first.values()), f"{far:g}", f"{tar:.6f}", *map(_cell, source.values())]
                for far, tar in result.tar_at_far.items()
            ],
        ),
    )
    curve = RocCurve(
        target,
        result.fpr,
        result.tpr,
        negatives=int(np.sum(~np.asarray(result.labels, dtype=bool))),
        auc=result.auc,
        tar_at_far=result.tar_at_far,
    )
    figure = replace(figure, dataset=f"{target} 1:1", n=len(result.scores), n_label="pairs")
    plot_roc([curve], figure, report.roc_path, what=f"{target} 1:1 ROC", figure_format=figure_format)
    return report


def embeddings_report(
    backbone: Any,
    data: Path,
    embeddings: Path,
    *,
    flip: bool,
    batch_size: int,
    device: Any,
    num_workers: int,
    progress: Progress = SILENT,
    dataset: Any = None,
) -> EmbeddingsReport:
    """Embed every image of the dataset at `data` (or of `dataset`, already opened from it) into
    `embeddings` (.parquet or .npy)."""
    from topofr_cli.data import open_dataset
    from topofr_cli.evaluation.embeddings_out import write_embeddings

    dataset = open_dataset(data) if dataset is None else dataset
    task = progress.start(f"embed {Path(data).name}", len(dataset), transient=True)
    try:
        return write_embeddings(
            backbone,
            dataset,
            embeddings,
            flip=flip,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            on_images=task.advance,
        )
    finally:
        task.close()
