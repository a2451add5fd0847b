"""`topofr bench` as a call: run every section, decide what failed, write bench.json (and the text the
caller renders) atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.atomic import write_text
from topofr_cli.progress import SILENT, Progress

JSON_NAME, TEXT_NAME = "bench.json", "bench.txt"


@dataclass(kw_only=True)
class BenchResult:
    report: dict[str, Any]  # the JSON document: environment, plan, budgets and one entry per section
    failed: list[str]  # names of the checks that failed (correctness rows, multi-GPU equality)
    written: list[Path] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.report, indent=2, ensure_ascii=False) + "\n"


def failed_checks(report: dict[str, Any]) -> list[str]:
    return report["correctness"]["failed"] + (
        ["multi-GPU equality"] if report["multi_gpu"]["status"] == "fail" else []
    )


def bench(
    device: str = "auto",
    *,
    quick: bool = False,
    precision: str | None = None,
    out: str | Path | None = None,
    progress: Progress = SILENT,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
    render_text: Callable[[dict[str, Any]], str] | None = None,
) -> BenchResult:
    """Check every device path and time the training step (topofr_cli.bench); see `topofr bench --help`.

    `out`: a folder for bench.json (and bench.txt, the `render_text` of the report, when given).
    `on_section(key, section)` is called as each section finishes."""
    from topofr_cli.bench import run_bench

    report = run_bench(device, quick, on_section, precision=precision, progress=progress)
    result = BenchResult(report=report, failed=failed_checks(report))
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        result.written.append(write_text(folder / JSON_NAME, result.to_json()))
        if render_text is not None:
            result.written.append(write_text(folder / TEXT_NAME, render_text(report)))
    return result
