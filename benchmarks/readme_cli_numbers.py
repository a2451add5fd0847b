"""The README numbers about the command line itself, for benchmarks/readme_numbers.py.

  help    CPU seconds of `python -m topofr_cli --help` in a child process (user + system, from
          RUSAGE_CHILDREN), median of a few runs, and whether the command imported torch
  bench   `topofr bench --device cpu --quick --json`: correctness verdicts, the TopoFR/plain step
          ratio with the quartiles the bench gives (a shared CPU makes the median alone misleading),
          and the h0 pair timings

Kept apart from readme_numbers.py so that file stays short; each function takes `quick` like the
other sections and returns the JSON stored for it.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELP = [sys.executable, "-m", "topofr_cli", "--help"]
BENCH = [sys.executable, "-m", "topofr_cli", "bench", "--device", "cpu", "--quick", "--json"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _imports_torch() -> bool:
    """Whether `--help` imports torch: -X importtime names every module imported, one per line."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *HELP[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    return "torch" in names


def help_start(quick: bool) -> dict:
    # CPU time, not wall time: the machine this runs on is shared, and CPU seconds are what a
    # loaded neighbour inflates least. The first run warms the file cache and is not counted.
    runs = 2 if quick else 7
    seconds = []
    for i in range(runs + 1):
        before = _child_cpu()
        subprocess.run(HELP, cwd=ROOT, env=_env(), capture_output=True, check=True)
        if i:
            seconds.append(_child_cpu() - before)
    return {
        "command": "python -m topofr_cli --help",
        "runs": runs,
        "cpu_seconds": [round(s, 3) for s in seconds],
        "median_cpu_seconds": round(statistics.median(seconds), 3),
        "torch_imported": _imports_torch(),
    }


def bench(quick: bool) -> dict:
    # --quick is the bench's own small mode and already the README's; nothing smaller exists
    done = subprocess.run(BENCH, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if not done.stdout.strip():
        raise SystemExit(f"{' '.join(BENCH[2:])} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    checks = [row["ok"] for row in report["correctness"]["rows"]]
    step = report["throughput"]["training_steps"]["rows"][0]
    return {
        "command": "topofr bench --device cpu --quick --json",
        "exit_status": done.returncode,
        "checks": {
            "pass": checks.count(True),
            "fail": checks.count(False),
            "not_applicable": checks.count(None),
        },
        "step": {
            key: step.get(key)
            for key in (
                "network",
                "classes",
                "batch",
                "precision",
                "status",
                "plain_img_s",
                "topofr_img_s",
                "topofr_over_plain",
                "topofr_over_plain_quartiles",
            )
        },
        "h0_ms": {str(r["n"]): r.get("ms") for r in report["throughput"]["h0_pairs"]["rows"]},
        "torch_threads": report["environment"]["torch_threads"],
        "elapsed_s": report["elapsed_s"],
    }


SECTIONS = {"help": help_start, "bench": bench}


def render(name: str, data: dict, where: str) -> str:
    """The README text of the `help` or `bench` section (`where`: cores and CPU model)."""
    if name == "help":
        torch = "imports torch" if data["torch_imported"] else "no torch import"
        return (
            f"about {data['median_cpu_seconds']:.2f} s of CPU, median of {data['runs']} runs of "
            f"`{data['command']}` on {where}: {torch}"
        )
    if name == "bench":
        c, s = data["checks"], data["step"]
        low, high = s["topofr_over_plain_quartiles"]
        checks = (
            "every correctness check passes"
            if not c["fail"]
            else f"{c['fail']} correctness checks fail, {c['pass']} pass"
        )
        h0 = " and ".join(f"{ms:.1f} ms at n = {n}" for n, ms in data["h0_ms"].items() if ms is not None)
        return (
            f"(`{data['command']}`, {where}, {data['torch_threads']} torch thread(s), a shared machine): "
            f"{checks} ({c['not_applicable']} of {sum(c.values())} not applicable on a CPU), a TopoFR step "
            f"costs {s['topofr_over_plain']:.2f}× a plain one (quartiles {low:.2f}–{high:.2f}; "
            f"{s['network']}, {s['classes']:,} classes, B = {s['batch']}), h0 pairs take {h0} (medians)"
        )
    raise KeyError(name)
