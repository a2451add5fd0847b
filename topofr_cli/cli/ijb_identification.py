"""The 1:N part of `topofr eval --ijb ROOT --ijb-protocol 1:N|both`: run, write, show (rich table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from topofr_cli.cli.common import console
from topofr_cli.errors import TopofrError

PROTOCOL_HELP = (
    "IJB protocol: 1:1 (template verification, TAR at FAR), 1:N (identification against each "
    "gallery split: TPIR at FPIR 1e-3/1e-2/1e-1 and CMC rank 1/5/10, docs/method.md §3.6) or both "
    "(the images are embedded once)."
)
RULE_HELP = (
    "1:N threshold rule: exact (open set per gallery split, the threshold admitting the most false "
    "alarms the FPIR allows) or insightface (its script's numbers: one merged closed-set gallery and "
    "its ceil(f·P)-th pooled non-mate score, one false alarm short when f·P is whole; §3.6)."
)


def protocol_option() -> Any:
    return typer.Option("1:1", "--ijb-protocol", help=PROTOCOL_HELP)


def rule_option() -> Any:
    return typer.Option("exact", "--ijb-1n-rule", help=RULE_HELP)


def check_protocol(protocol: str, rule: str) -> tuple[bool, bool]:
    """(run 1:1, run 1:N) for `--ijb-protocol`; bad values fail before the model is loaded."""
    from topofr_cli.evaluation.ijb_identification import PROTOCOLS, RULES

    if protocol not in PROTOCOLS:
        raise TopofrError(f"--ijb-protocol {protocol}: expected one of {', '.join(PROTOCOLS)}")
    if rule not in RULES:
        raise TopofrError(f"--ijb-1n-rule {rule}: expected one of {', '.join(RULES)}")
    return protocol in ("1:1", "both"), protocol in ("1:N", "both")


def show_identification(report: Any) -> None:
    result = report.result
    table = Table(title=f"{result.target} 1:N — {result.num_probes} probe templates, rule {result.rule}")
    first = result.galleries[0]
    table.add_column("gallery")
    for column in ("templates", "mated", "non-mated"):
        table.add_column(column, justify="right")
    for fpir in first.tpir_at_fpir:
        table.add_column(f"TPIR@FPIR={fpir:.0e}", justify="right")
    for rank in first.cmc:
        table.add_column(f"rank-{rank}", justify="right")
    for g in result.galleries:
        table.add_row(
            g.gallery,
            str(g.num_gallery),
            str(g.num_mated),
            str(g.num_nonmated),
            *(f"{100 * v:.2f}" for v in g.tpir_at_fpir.values()),
            *(f"{100 * v:.2f}" for v in g.cmc.values()),
        )
    console.print(table)
    console.print(f"wrote {report.csv_path} and {report.figure_path.name}", highlight=False)


def identification(
    backbone: Any,
    root: Path,
    target: str,
    out: Path,
    *,
    rule: str,
    templates: Any,
    progress: Any,
    **options: Any,
) -> dict[str, Any]:
    """Run 1:N (reusing `templates` pooled by the 1:1 run when given), write its files, show them."""
    from topofr_cli.evaluation.ijb import check_target
    from topofr_cli.evaluation.ijb_identification import run_identification
    from topofr_cli.evaluation.ijb_identification_report import (
        identification_summary,
        write_identification_report,
    )

    report_options = {k: options.pop(k) for k in ("provenance", "figure", "figure_format")}
    task = None
    if templates is None:
        from topofr_cli.evaluation.ijb_protocol import read_ijb_meta

        task = progress.start(
            f"{check_target(target)} images", len(read_ijb_meta(root, target).image_names), transient=True
        )
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
    report = write_identification_report(result, out, **report_options)
    show_identification(report)
    return identification_summary(report)
