"""`topofr bench` as a call: run every section, decide what failed, write bench.json (and the text the
caller renders) atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.atomic import write_text
from topofr_cli.artifacts.outputs import REPORT, check_output
from topofr_cli.commands.common import claims, is_fresh, mark
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
    overwrite: bool = False,
    progress: Progress = SILENT,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
    render_text: Callable[[dict[str, Any]], str] | None = None,
) -> BenchResult:
    """Check every device path and time the training step (topofr_cli.bench); see `topofr bench --help`.

    `out`: a folder for bench.json (and bench.txt, the `render_text` of the report, when given); earlier
    results there are replaced only with `overwrite`, and only in a folder topofr wrote. `on_section(key,
    section)` is called as each section finishes."""
    from topofr_cli.bench import run_bench

    folder = Path(out) if out is not None else None
    names = [JSON_NAME] + ([TEXT_NAME] if render_text is not None else [])
    if folder is not None:  # refused before minutes of measuring, and again once the folder is held
        check_output(folder, REPORT, overwrite=overwrite, results=names)
    with claims([folder]):
        if folder is not None:
            check_output(folder, REPORT, overwrite=overwrite, results=names)
        report = run_bench(device, quick, on_section, precision=precision, progress=progress)
        result = BenchResult(report=report, failed=failed_checks(report))
        if folder is not None:
            _write(folder, result, render_text)
    return result


def _write(folder: Path, result: BenchResult, render_text: Callable[[dict[str, Any]], str] | None) -> None:
    fresh = is_fresh(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result.written.append(write_text(folder / JSON_NAME, result.to_json()))
    if render_text is not None:
        result.written.append(write_text(folder / TEXT_NAME, render_text(result.report)))
    mark(folder, "bench", fresh=fresh)
