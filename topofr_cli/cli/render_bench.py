"""`topofr bench`'s report as rich tables, one per section (printed as each section finishes), and as
the plain text of bench.txt."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

from topofr_cli.bench.runner import section

MB = 1e6


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return {True: "[green]PASS[/]", False: "[bold red]FAIL[/]", None: "n/a"}[ok]


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    return table


def _budget(section: dict[str, Any]) -> str:
    return f"{section['seconds']:.0f} s of {section['budget_s']:.0f} s"


def correctness_table(section: dict[str, Any]) -> Table:
    table = _table(f"1. Correctness on the device ({_budget(section)})", ["check", "result", "detail"])
    table.columns[2].justify = "left"
    for row in section["rows"]:
        table.add_row(row["check"], _verdict(row["ok"]), row["detail"])
    return table


def _ratio(row: dict[str, Any]) -> str:
    if row.get("topofr_over_plain") is None:
        return "—"
    low, high = row["topofr_over_plain_quartiles"]
    return f"{row['topofr_over_plain']:.3f} ({low:.3f}–{high:.3f})"


def training_steps_table(section: dict[str, Any]) -> Table:
    table = _table(
        f"2a. Training step, plain and TopoFR interleaved: median (quartiles) ({_budget(section)})",
        ["configuration", "plain img/s", "TopoFR img/s", "TopoFR/plain", "peak GiB plain/TopoFR", "status"],
    )
    for row in section["rows"]:
        config = f"{row['network']}, {row['classes']:,} classes, B {row['batch']}, {row['precision']}, " + (
            "compiled" if row["compile"] else "eager"
        )
        peaks = f"{_fmt(row.get('plain_peak_gib'), 2)} / {_fmt(row.get('topofr_peak_gib'), 2)}"
        table.add_row(
            config,
            _fmt(row.get("plain_img_s")),
            _fmt(row.get("topofr_img_s")),
            _ratio(row),
            peaks,
            row["status"],
        )
    return table


def step_parts_table(section: dict[str, Any]) -> Table:
    table = _table(
        f"2b. Parts of the TopoFR step ({_budget(section)})", ["part", "batch", "ms (median)", "status"]
    )
    for row in section["rows"]:
        table.add_row(row["part"], str(row["batch"]), _fmt(row.get("ms"), 3), row["status"])
    return table


def h0_pairs_table(section: dict[str, Any]) -> Table:
    table = _table(f"2c. h0 pairs of one n×n matrix ({_budget(section)})", ["n", "ms (median)", "status"])
    for row in section["rows"]:
        table.add_row(str(row["n"]), _fmt(row.get("ms"), 3), row["status"])
    return table


def data_loader_table(section: dict[str, Any]) -> Table:
    table = _table(
        f"2d. Train loader on a packed synthetic set ({_budget(section)})",
        ["images", "batch", "workers", "img/s", "status"],
    )
    for row in section["rows"]:
        table.add_row(
            str(row["images"]),
            str(row["batch"]),
            str(row["workers"]),
            _fmt(row.get("img_s"), 0),
            row["status"],
        )
    return table


def multi_gpu_table(section: dict[str, Any]) -> Table:
    table = _table(f"3. Multi-GPU: {section['status']} ({_budget(section)})", ["what", "value"])
    table.columns[1].justify = "left"
    for row in section["image_gather_bytes"]:
        table.add_row(
            f"global PTSA image all-gather, {row['world_size']} ranks × {row['batch_per_rank']}",
            f"{row['float32_bytes'] / MB:,.1f} MB as float32 → {row['uint8_bytes'] / MB:,.1f} MB as uint8 "
            "(computed)",
        )
    if "two_ranks_equal_one_process" in section:
        table.add_row(
            "2 ranks equal 1 process",
            f"{_verdict(section['two_ranks_equal_one_process'])} (worst "
            f"relative Δ {section['worst_relative_delta']:.1e}, {section['tolerance']})",
        )
        measured = section["measured_image_gather_bytes"]
        table.add_row(
            f"image all-gather measured, 2 ranks × {measured['batch_per_rank']}",
            f"{measured['bytes']:,} B (float32 would be {measured['float32_would_be']:,} B)",
        )
        tp = section["throughput"]
        table.add_row(
            f"img/s per GPU, {tp['network']} B={tp['batch_per_gpu']}/GPU",
            f"plain {_fmt(tp.get('plain_img_s_per_gpu'))}, TopoFR global scope "
            f"{_fmt(tp.get('topofr_img_s_per_gpu'))}" + (f" — {tp['status']}" if "status" in tp else ""),
        )
    return table


TABLES = {
    "correctness": correctness_table,
    "throughput.training_steps": training_steps_table,
    "throughput.step_parts": step_parts_table,
    "throughput.h0_pairs": h0_pairs_table,
    "throughput.data_loader": data_loader_table,
    "multi_gpu": multi_gpu_table,
}


def heading(result: dict[str, Any]) -> str:
    env = result["environment"]
    mode = "quick" if result["quick"] else "full"
    return (
        f"topofr bench ({mode}) on {env['device_name']}, torch {env['torch']}"
        + (f", CUDA {env['cuda']}" if env["device"] == "cuda" else "")
        + f", {env['visible_gpus']} GPU(s) visible"
    )


def report_text(result: dict[str, Any]) -> str:
    """bench.txt: the heading and every table, without colour."""
    text = Console(file=io.StringIO(), width=200, color_system=None)
    text.print(heading(result))
    for key, render in TABLES.items():
        text.print(render(section(result, key)))
    return text.file.getvalue()
