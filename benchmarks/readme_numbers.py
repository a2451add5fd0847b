"""Regenerate every number the README states, with the machine it was measured on.

    python benchmarks/readme_numbers.py --write-readme        # everything, README rewritten
    python benchmarks/readme_numbers.py --sections main_job   # one section, merged into the JSON
    python benchmarks/readme_numbers.py --write-readme        # ... and rewrite the README's marked lines
    python benchmarks/readme_numbers.py --quick               # smoke test: tiny budgets, a scratch JSON

Sections (each measured by running what a user runs, in a scratch folder):
  main_job         `topofr train quickstart` and `quickstart_topofr` over seeds 0-4 (`--set train.seed=N`):
                   held-out accuracy mean ± std over seeds and range, raw-pixel baseline, wall time
  tests            `python -m pytest -q tests`: test count and wall time
  fuzz             `benchmarks/fuzz.py` long run: inputs, outcome counts, peak memory, time
  align            `benchmarks/align.py`: detection and alignment speed (needs the `detect` extra)
  compat_gate      `benchmarks/compat_effects.py`: share of samples the reference's w2 gate switches off
  help, bench      `topofr --help` CPU time and `topofr bench --device cpu --quick` (readme_cli_numbers.py)

The JSON (default docs/numbers/readme_numbers.json) holds, per section, the numbers, the exact command,
the commit, CPU model, core count, torch version and date. The README's numbers sit between
`<!-- readme-numbers:NAME -->` markers; `--write-readme` rewrites them from the JSON and
tests/test_readme_numbers.py checks that they agree. Training is deterministic on one machine but not
across CPUs (float kernels differ), so the seeds' spread is the number to compare, not one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "numbers" / "readme_numbers.json"
README = ROOT / "README.md"
SEEDS = (0, 1, 2, 3, 4)
QUICK = [  # the smoke test's budget: a tiny set, a few steps
    "data.synthetic.identities=12",
    "data.synthetic.images_per_identity=4",
    "data.synthetic.heldout_identities=10",
    "data.synthetic.pairs=40",
    "data.path=data/quick_synthetic",
    "schedule.max_steps=3",
]
# the command-line sections live beside this file; put its folder on the path however this file is
# loaded (as a script, through record.py, or by the test from its file path)
sys.path.insert(0, str(ROOT / "benchmarks"))
import readme_cli_numbers  # noqa: E402

MARKER = re.compile(r"<!-- readme-numbers:(\w+) -->(.*?)<!-- /readme-numbers -->", re.S)


def machine() -> dict:
    """Where the numbers were measured: commit, CPU model, cores, torch, Python, date."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return {
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _train(recipe: str, seed: int, work: Path, extra: list[str]) -> dict:
    """One `topofr train` run as a user starts it; its held-out accuracy from metrics.csv."""
    from topofr_cli.artifacts.run_dir import read_metrics

    out = work / "runs" / f"{recipe}_seed{seed}"
    command = [sys.executable, "-m", "topofr_cli", "train", recipe, "--set", f"train.seed={seed}"]
    command += ["--set", f"train.output={out}"] + [a for s in extra for a in ("--set", s)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    rows = [r for r in read_metrics(out / "metrics.csv") if any(k.endswith("_acc") and r[k] for k in r)]
    last = rows[-1]
    key = next(k for k in last if k.endswith("_acc") and last[k])
    meta = json.loads(
        (work / "data" / ("quick_synthetic" if extra else "quickstart_synthetic") / "meta.json").read_text()
    )
    return {
        "seed": seed,
        "accuracy": float(last[key]),
        "accuracy_fold_std": float(last[key.replace("_acc", "_std")]),
        "seconds": round(seconds, 1),
        "pixel_baseline": meta["synthetic"]["pixel_baseline_accuracy"],
        "command": "topofr train " + " ".join(command[4:]).replace(str(work) + "/", ""),
    }


def _spread(runs: list[dict]) -> dict:
    accuracies = [100 * r["accuracy"] for r in runs]
    return {
        "seeds": [r["seed"] for r in runs],
        "mean": round(statistics.mean(accuracies), 2),
        "std": round(statistics.stdev(accuracies), 2) if len(runs) > 1 else 0.0,
        "min": round(min(accuracies), 2),
        "max": round(max(accuracies), 2),
        "pixel_baseline": round(100 * runs[0]["pixel_baseline"], 2),
        "first_run_seconds": runs[0]["seconds"],  # includes generating the data set
        "later_run_seconds": round(statistics.mean(r["seconds"] for r in runs[1:]), 1)
        if len(runs) > 1
        else None,
        "runs": runs,
    }


def main_job(quick: bool) -> dict:
    seeds = SEEDS[:2] if quick else SEEDS
    extra = QUICK if quick else []
    result = {}
    with tempfile.TemporaryDirectory(prefix="readme-numbers-") as scratch:
        for recipe in ("quickstart", "quickstart_topofr"):
            runs = []
            for seed in seeds:
                runs.append(_train(recipe, seed, Path(scratch), extra))
                print(
                    f"  {recipe} seed {seed}: {100 * runs[-1]['accuracy']:.2f} % in {runs[-1]['seconds']:.0f} s",
                    flush=True,
                )
            result[recipe] = _spread(runs)
    return result


def tests(quick: bool) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["tests/test_version.py"] if quick else ["tests"]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    counts = dict(
        (k, int(v))
        for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout.splitlines()[-1])
    )
    return {"command": "python -m pytest -q " + command[-1], "counts": counts, "seconds": round(seconds)}


def fuzz(quick: bool) -> dict:
    # every target, the hostile ones included (tests/fuzz/targets_hostile.py), 1,000 inputs each
    inputs = 10 if quick else 1000
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "fuzz.json"
        args = [
            "--inputs",
            str(inputs),
            "--count",
            "checkpoint=200",
            "--count",
            "nonfinite_model=200",
            "--seed",
            "19",
        ]
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "benchmarks/fuzz.py", *args, "--json", str(out)],
            cwd=ROOT,
            env=_env(),
            check=True,
        )
        seconds = time.perf_counter() - start
        report = json.loads(out.read_text())
    return {
        "command": "python benchmarks/fuzz.py " + " ".join(args),
        "inputs": sum(report["inputs_per_target"].values()),
        "counts": report["counts"],
        "peak_rss_mb": round(report["peak_rss_mb"]),
        "seconds": round(seconds),
    }


def align(quick: bool) -> dict:
    args = ["--workers", "2", "--repeat", "1" if quick else "2"]
    done = subprocess.run(
        [sys.executable, "benchmarks/align.py", *args], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        return {
            "command": "python benchmarks/align.py " + " ".join(args),
            "error": done.stderr.strip().splitlines()[-1:],
        }
    rates = {}
    for line in done.stdout.splitlines():
        match = re.match(r"(detect|align 112 px, (numpy|OpenCV) warp).*?\s([\d.]+)\s+([\d.]+|nan)$", line)
        if match:
            rates["detect" if match[1] == "detect" else match[2].lower()] = [float(match[3]), float(match[4])]
    return {
        "command": "python benchmarks/align.py " + " ".join(args),
        "rates": rates,
        "header": done.stdout.splitlines()[0],
    }


def compat_gate(quick: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "benchmarks/compat_effects.py"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if "~0.80" in x)  # the first table: margin in fp32
    low, high = re.search(r"fp16\s+([\d.]+)–\s*([\d.]+) %", line).groups()
    return {
        "command": "python benchmarks/compat_effects.py",
        "target_cos": 0.8,
        "fp16_min": float(low),
        "fp16_max": float(high),
    }


SECTIONS: dict[str, Callable[[bool], dict]] = {  # tests last: it runs the suite on the rewritten README
    "compat_gate": compat_gate,
    "main_job": main_job,
    "fuzz": fuzz,
    "align": align,
    **readme_cli_numbers.SECTIONS,
    "tests": tests,
}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60)} s"


def render(name: str, data: dict) -> str:
    """The README text of one section, from its JSON (the test renders the same way)."""
    where = f"{data['machine']['cores']} cores, {data['machine']['cpu']}"
    if name == "main_job":
        plain, topo = data["quickstart"], data["quickstart_topofr"]

        def spread(s: dict) -> str:
            return (
                f"{s['mean']:.2f} % ± {s['std']:.2f} over seeds {s['seeds'][0]}–{s['seeds'][-1]} "
                f"(range {s['min']:.2f}–{s['max']:.2f} %)"
            )

        return (
            f"measured: {spread(plain)} against {plain['pixel_baseline']:.2f} % for raw pixels, "
            f"{_minutes(plain['first_run_seconds'])} wall for the first run (data generation included) on {where}. "
            f"The same with TopoFR switched on: `topofr train quickstart_topofr` (measured: {spread(topo)}, "
            f"{_minutes(topo['later_run_seconds'] or topo['first_run_seconds'])} a run)"
        )
    if name == "tests":
        return f"{sum(data['counts'].values())} tests, {_minutes(data['seconds'])} on {where}"
    if name == "fuzz":
        c = data["counts"]
        return (
            f"(`{data['command']}`): {data['inputs']:,} inputs, {c.get('project_error', 0):,} project errors, "
            f"{c.get('accepted', 0):,} accepted, {c.get('other', 0)} other exceptions, {c.get('hang', 0)} hangs, "
            f"{c.get('memory', 0)} memory-cap hits, {c.get('crash', 0)} crashes, peak worker memory {data['peak_rss_mb']} MB, {data['seconds']} s on {where}"
        )
    if name == "align":
        r = data["rates"]
        text = f"(`{data['command']}`, {where}): detection {r['detect'][0]:.1f} photos/s in one process, {r['detect'][1]:.1f} with 2 workers; alignment {r['numpy'][0]:,.0f} faces/s with the numpy warp"
        return text + (f", {r['opencv'][0]:,.0f} with OpenCV's `warpAffine`" if "opencv" in r else "")
    if name == "compat_gate":
        return f"{data['fp16_min']:.0f}–{data['fp16_max']:.0f} %"
    return readme_cli_numbers.render(name, data, where)


def write_readme(numbers: dict) -> list[str]:
    """Rewrite each marked README block whose section is in `numbers`; return the names left as they were."""
    text = README.read_text(encoding="utf-8")
    stale = []

    def replace(match: re.Match) -> str:
        name = match[1]
        if name not in numbers:
            stale.append(name)
            return match[0]
        return f"<!-- readme-numbers:{name} -->{render(name, numbers[name])}<!-- /readme-numbers -->"

    README.write_text(MARKER.sub(replace, text), encoding="utf-8")
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: tiny budgets, writes a scratch JSON"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help=f"where to merge the results (default {DEFAULT_JSON.relative_to(ROOT)}; quick: a temp file)",
    )
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the README's marked numbers from the JSON"
    )
    args = parser.parse_args()
    names = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}")
    if args.quick and args.write_readme:
        parser.error("--quick numbers never go into the README")
    path = args.json or (
        Path(tempfile.gettempdir()) / "readme_numbers_quick.json" if args.quick else DEFAULT_JSON
    )
    numbers = json.loads(path.read_text()) if path.exists() else {}
    where = machine()
    for name in names:
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        numbers[name] = {**SECTIONS[name](args.quick), "machine": where, "quick": args.quick}
        numbers[name]["script_seconds"] = round(time.perf_counter() - start)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(numbers, indent=1, ensure_ascii=False) + "\n")  # after each section
        print(f"{name} ({numbers[name]['script_seconds']} s): {render(name, numbers[name])}", flush=True)
        if args.write_readme:  # after each section, so the suite (run last) reads the new README
            stale = write_readme(numbers)
    print(f"wrote {path}")
    if args.write_readme:
        print("README rewritten" + (f"; not measured yet: {', '.join(stale)}" if stale else ""))


if __name__ == "__main__":
    main()
