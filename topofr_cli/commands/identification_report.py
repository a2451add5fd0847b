"""What `topofr eval --ijb-protocol 1:N` leaves on disk: `<target>_1n.csv` and `<target>_1n.<format>`.

The CSV has one row per (gallery, measure): TPIR at each FPIR (with its threshold) and the CMC at
ranks 1, 5, 10; `model` and `step` first, the provenance columns of the 1:1 CSV last.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.atomic import write_text
from topofr_cli.evaluation.ijb_identification import IdentificationResult
from topofr_cli.plots.style import FigureMeta
from topofr_cli.progress import Progress

HEADER = ["gallery", "measure", "at", "value", "threshold", "mated", "nonmated", "rule"]


@dataclass
class IdentificationReport:
    result: IdentificationResult
    csv_path: Path
    figure_path: Path


def identification_csv_name(target: str) -> str:
    """The file that holds a 1:N run's numbers in the output folder."""
    return f"{target.strip().lower()}_1n.csv"


def _rows(result: IdentificationResult) -> list[list[Any]]:
    rows = []
    for g in result.galleries:
        counts = [g.num_mated, g.num_nonmated, result.rule]
        for fpir, tpir in g.tpir_at_fpir.items():
            rows.append(
                [g.gallery, "tpir_at_fpir", f"{fpir:g}", f"{tpir:.6f}", f"{g.thresholds[fpir]:.6f}", *counts]
            )
        for rank, rate in g.cmc.items():
            rows.append([g.gallery, "cmc", rank, f"{rate:.6f}", "", *counts])
    return rows


def write_identification_report(
    result: IdentificationResult,
    out: Path,
    *,
    provenance: dict[str, Any] | None = None,
    figure: FigureMeta = FigureMeta(),
    figure_format: str = "png",
) -> IdentificationReport:
    """Write the 1:N CSV and figure of `result` into `out` (each atomically)."""
    from topofr_cli.plots.identification import plot_identification

    source = dict(provenance or {})
    first = {key: source.pop(key, None) for key in ("model", "step")}
    lead = ["" if v is None else v for v in first.values()]
    tail = ["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in source.values()]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*first, *HEADER, *source])
    writer.writerows([*lead, *row, *tail] for row in _rows(result))
    prefix = result.target.lower()
    report = IdentificationReport(
        result, out / identification_csv_name(result.target), out / f"{prefix}_1n.{figure_format}"
    )
    write_text(report.csv_path, buffer.getvalue())
    figure = replace(figure, dataset=f"{result.target} 1:N", n=result.num_probes, n_label="probe templates")
    plot_identification(result, figure, report.figure_path, figure_format=figure_format)
    return report


def identification_summary(report: IdentificationReport) -> dict[str, Any]:
    """The `--json` part of a 1:N run."""
    result = report.result
    return {
        "target": result.target,
        "rule": result.rule,
        "probes": result.num_probes,
        "galleries": {
            g.gallery: {
                "templates": g.num_gallery,
                "mated": g.num_mated,
                "nonmated": g.num_nonmated,
                "tpir_at_fpir": {f"{f:g}": v for f, v in g.tpir_at_fpir.items()},
                "thresholds": {f"{f:g}": v for f, v in g.thresholds.items()},
                "cmc": {str(k): v for k, v in g.cmc.items()},
            }
            for g in result.galleries
        },
        "csv": report.csv_path,
        "figure": report.figure_path,
    }


def identification(
    backbone: Any,
    root: Path,
    target: str,
    out: Path,
    *,
    rule: str,
    templates: Any,
    progress: Progress,
    provenance: dict[str, Any] | None = None,
    figure: FigureMeta = FigureMeta(),
    figure_format: str = "png",
    **options: Any,
) -> IdentificationReport:
    """Run 1:N on the IJB root (reusing `templates` the 1:1 run pooled, when given) and write its CSV
    and figure into `out`. `options`: `run_identification`'s flip, norm, batch and device options."""
    from topofr_cli.evaluation.ijb import check_target
    from topofr_cli.evaluation.ijb_identification import run_identification

    task = None
    if templates is None:
        from topofr_cli.evaluation.ijb_protocol import read_ijb_meta

        images = len(read_ijb_meta(root, target).image_names)
        task = progress.start(f"{check_target(target)} images", images, transient=True)
    try:
        result = run_identification(
            backbone,
            root,
            target,
            rule=rule,
            templates=templates,
            on_images=task.advance if task else None,
            **options,
        )
    finally:
        if task:
            task.close()
    return write_identification_report(
        result, out, provenance=provenance, figure=figure, figure_format=figure_format
    )
