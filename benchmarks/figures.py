"""Regenerate the README's figures (docs/figures/*) and docs/ablation.png from runs this script makes.

    python benchmarks/figures.py                  # the quickstart runs + figures (~15 min on 2 idle cores)
    python benchmarks/figures.py --ablation       # ... and the ablation study (~1.5 h more), its table too
    python benchmarks/figures.py --quick          # smoke test: tiny runs, figures into a scratch folder

What runs (in WORK, default a temporary folder), exactly as a user would type it:
  topofr train quickstart --set train.save_every=10          (and quickstart_topofr)
  topofr eval RUN/checkpoints/step_LAST.pt --out E             -> docs/figures/quickstart_roc.png (+ .csv)
  topofr analyze-topology RUN RUN_TOPOFR --data D --samples 512 --out T
                                                               -> docs/figures/quickstart_collapse_curve_l2.png
                                                                  (+ quickstart_collapse_curve.csv)
  topofr analyze-topology RUN_TOPOFR/checkpoints/step_LAST.pt --data D --samples 512 --out P
                                                               -> docs/figures/quickstart_topofr_step00000092_persistence_diagrams.png
  python benchmarks/ablation.py --out WORK/ablation --collect --write-doc --figure docs/ablation.png
It prints each figure with the command and run it came from (the README captions say the same) and
writes docs/figures/figures.json with the commit, CPU, torch and commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
QUICK = [  # smoke-test budget
    "data.synthetic.identities=12",
    "data.synthetic.images_per_identity=4",
    "data.synthetic.heldout_identities=10",
    "data.synthetic.pairs=40",
    "data.path=data/quick_synthetic",
    "schedule.max_steps=4",
    "train.save_every=2",
]


def topofr(args: list[str], work: Path) -> str:
    """Run `topofr ARGS` in WORK; the command as a user would type it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "topofr_cli", *args], cwd=work, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"topofr {' '.join(args)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return "topofr " + " ".join(args).replace(f"{work}/", "")


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.rglob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one {pattern}, found {[str(p) for p in found]}")
    return found[0]


def quickstart_figures(work: Path, out: Path, quick: bool) -> dict[str, str]:
    """Train both quickstart recipes, then the ROC, the collapse curves and the persistence diagrams."""
    extra = [a for s in (QUICK if quick else ["train.save_every=10"]) for a in ("--set", s)]
    data = work / ("data/quick_synthetic" if quick else "data/quickstart_synthetic")
    made, runs = {}, {}
    for recipe in ("quickstart", "quickstart_topofr"):
        runs[recipe] = work / "runs" / recipe
        made[f"train {recipe}"] = topofr(
            ["train", recipe, *extra, "--set", f"train.output={runs[recipe]}"], work
        )
    last = sorted((runs["quickstart"] / "checkpoints").glob("step_*.pt"))[-1]
    command = topofr(["eval", str(last), "--out", str(work / "eval")], work)
    shutil.copyfile(only(work / "eval", "verification_roc.png"), out / "quickstart_roc.png")
    shutil.copyfile(work / "eval" / "verification.csv", out / "quickstart_roc.csv")  # the numbers drawn
    made["quickstart_roc.png"] = command
    samples = ["--samples", "32", "--per-identity", "4"] if quick else ["--samples", "512"]
    curves = [
        "analyze-topology",
        str(runs["quickstart"]),
        str(runs["quickstart_topofr"]),
        "--data",
        str(data),
    ]
    command = topofr([*curves, *samples, "--dims", "0", "--out", str(work / "curves")], work)
    shutil.copyfile(
        only(work / "curves", "*collapse_curve*l2*.png"), out / "quickstart_collapse_curve_l2.png"
    )
    shutil.copyfile(work / "curves" / "distances.csv", out / "quickstart_collapse_curve.csv")
    made["quickstart_collapse_curve_l2.png"] = command
    last_topofr = sorted((runs["quickstart_topofr"] / "checkpoints").glob("step_*.pt"))[-1]
    command = topofr(
        [
            "analyze-topology",
            str(last_topofr),
            "--data",
            str(data),
            *samples,
            "--out",
            str(work / "diagrams"),
        ],
        work,
    )
    name = (
        f"quickstart_topofr_{last_topofr.stem.replace('_', '')}_persistence_diagrams.png"  # the README's name
    )
    shutil.copyfile(only(work / "diagrams", "*persistence_diagrams.png"), out / name)
    made[name] = command + f"  (checkpoint {last_topofr.name})"
    return made


def ablation_figure(work: Path, out: Path) -> dict[str, str]:
    args = [
        "--out",
        str(work / "ablation"),
        "--collect",
        "--write-doc",
        "--figure",
        str(out.parent / "ablation.png"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablation.py"), *args], env=env, check=True)
    command = " ".join(args).replace(f"{work}/", "WORK/").replace(f"{ROOT}/", "")
    return {"ablation.png": "python benchmarks/ablation.py " + command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny runs; figures go to WORK/figures, not docs/"
    )
    parser.add_argument("--ablation", action="store_true", help="also run the ablation study (long)")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme_numbers import machine

    with tempfile.TemporaryDirectory(prefix="topofr-figures-") as scratch:
        work = (args.work or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        out = work / "figures" if args.quick else FIGURES
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        made = quickstart_figures(work, out, args.quick)
        if args.ablation:
            made |= ablation_figure(work, out)
        record = {"machine": machine(), "seconds": round(time.perf_counter() - start), "figures": made}
        (out / "figures.json").write_text(json.dumps(record, indent=1) + "\n")
        for name, command in made.items():
            print(f"{name}: {command}")
        print(f"{record['seconds']} s; figures in {out}")
        if args.quick:
            print("(quick: nothing under docs/ changed)")
            if args.work is None:
                keep = Path(tempfile.gettempdir()) / "topofr-figures-quick"
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(out, keep)
                print(f"kept the quick figures in {keep}")


if __name__ == "__main__":
    main()
