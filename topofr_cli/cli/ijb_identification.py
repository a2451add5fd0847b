"""The 1:N options of `topofr eval --ijb ROOT --ijb-protocol 1:N|both` and its table."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from topofr_cli.cli.common import console

PROTOCOL_HELP = (
    "IJB protocol: 1:1 (template verification, TAR at FAR), 1:N (identification against each "
    "gallery split: TPIR at FPIR 1e-3/1e-2/1e-1 and CMC rank 1/5/10) or both "
    "(the images are embedded once)."
)
RULE_HELP = (
    "1:N threshold rule: exact (open set per gallery split, the threshold admitting the most false "
    "alarms the FPIR allows) or insightface (its script's numbers: one merged closed-set gallery and "
    "its ceil(f·P)-th pooled non-mate score, one false alarm short when f·P is whole)."
)


def protocol_option() -> Any:
    return typer.Option("1:1", "--ijb-protocol", help=PROTOCOL_HELP)


def rule_option() -> Any:
    return typer.Option("exact", "--ijb-1n-rule", help=RULE_HELP)


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
