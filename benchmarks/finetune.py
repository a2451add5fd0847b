"""Does starting from a trained model help on a few photos of new people? Fine-tune against scratch.

    # the two arms may run side by side (separate processes); the report reads their result.json files
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/finetune.py --out runs/bench-finetune --arms finetune
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/finetune.py --out runs/bench-finetune --arms scratch
    python benchmarks/finetune.py --out runs/bench-finetune --report-only --json benchmarks/results/finetune.json

1. Pretrain once on synthetic set A: the `quickstart` recipe as shipped (150 identities × 10 photos,
   seed 0, 92 steps).
2. Set B: the `finetune_quickstart` recipe's data (40 *new* identities × 5 photos, generator seed 1,
   so none is one of A's; verification on 200 pairs of 100 further unseen identities).
3. On B, the same budget (the recipe's 48 steps of 16 images, same head, lr, schedule, batch) twice per seed:
   (i) from scratch: `train.init` null, backbone lr multiplier 1, no frozen steps (what one would run
   without a pretrained model); (ii) fine-tune: the recipe as shipped, from A's last checkpoint.
   Verification accuracy on B's unseen identities every `--eval-every` steps and at the end.
4. Report mean ± sample std over seeds of the final accuracy, and per run the first evaluated step at
   which the accuracy reaches the target (default: the from-scratch arm's mean final accuracy).

Runs are resumable: a finished run (its `result.json`) is read back, not repeated.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from topofr_cli.engine.metrics import read_metrics

from topofr_cli import __version__
from topofr_cli.artifacts.checkpoint import latest_checkpoint
from topofr_cli.config import load_recipe
from topofr_cli.data import open_dataset
from topofr_cli.engine.trainer import train
from topofr_cli.engine.validation import verification_bins, verify
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.recipes import resolve_recipe

SCRATCH = ["train.init=null", "optim.backbone_lr_multiplier=1", "train.freeze_backbone_steps=0"]


def pretrain(out: Path) -> Path:
    run = out / "pretrain_a"
    found = latest_checkpoint(run)
    if found is not None and (run / "done").exists():
        return found
    recipe = load_recipe(
        resolve_recipe("quickstart"),
        [f"data.path={out / 'data_a'}", f"train.output={run}", "train.eval_at_epoch_end=false"],
    )
    train(recipe, overwrite=True, progress=False)
    (run / "done").write_text("")
    return latest_checkpoint(run)


def run_arm(out: Path, arm: str, seed: int, init: Path, eval_every: int) -> dict[str, Any]:
    run = out / f"{arm}_seed{seed}"
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    overrides = [
        f"data.path={out / 'data_b'}",
        f"train.output={run}",
        f"train.seed={seed}",
        f"train.eval_every={eval_every}",
        *(SCRATCH if arm == "scratch" else [f"train.init={init}"]),
    ]
    recipe = load_recipe(resolve_recipe("finetune_quickstart"), overrides)
    started = time.perf_counter()
    result = train(recipe, overwrite=True, progress=False)
    curve = [
        {"step": int(row["step"]), "accuracy": float(row["val_synthetic_val_acc"])}
        for row in read_metrics(run / "metrics.csv")
        if row.get("val_synthetic_val_acc")
    ]
    record = {
        "arm": arm,
        "seed": seed,
        "steps": result.steps,
        "final_accuracy": result.verification[0].accuracy,
        "final_accuracy_std_over_folds": result.verification[0].accuracy_std,
        "curve": curve,
        "wall_seconds": time.perf_counter() - started,
    }
    done.write_text(json.dumps(record, indent=1))
    return record


def accuracy_before_training(out: Path, init: Path) -> float:
    """A's model on B's unseen identities with no training on B (step 0 of the fine-tune); cached."""
    cached = out / "before_training.json"
    if cached.exists():
        return json.loads(cached.read_text())["accuracy"]
    dataset = open_dataset(out / "data_b")
    bins = verification_bins([], out / "data_b", dataset.meta)
    model = load_model(init)
    accuracy = verify(model.backbone, bins, device=torch.device("cpu"), batch_size=64)[0].accuracy
    cached.write_text(json.dumps({"accuracy": accuracy}))
    return accuracy


def steps_to(curve: list[dict[str, Any]], target: float) -> int | None:
    return next((point["step"] for point in curve if point["accuracy"] >= target - 1e-12), None)


def summarise(runs: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    arms = {arm: [r for r in runs if r["arm"] == arm] for arm in ("scratch", "finetune")}
    if target is None:
        target = statistics.mean(r["final_accuracy"] for r in arms["scratch"])
    table = {}
    for arm, rows in arms.items():
        finals = [r["final_accuracy"] for r in rows]
        reached = [steps_to(r["curve"], target) for r in rows]
        table[arm] = {
            "n": len(rows),
            "final_accuracy_mean": statistics.mean(finals),
            "final_accuracy_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "final_accuracies": finals,
            "steps_to_target": reached,
            "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in rows),
        }
    return {"target_accuracy": target, "arms": table}


def markdown(report: dict[str, Any]) -> str:
    """The docs/results.md table."""
    target = 100 * report["target_accuracy"]
    lines = [
        f"| arm | n | verification acc. % (mean ± std over seeds) | per seed | first step ≥ {target:.2f} % | s/run |",
        "|---|---|---|---|---|---|",
    ]
    for arm, row in report["arms"].items():
        seeds = ", ".join(f"{100 * a:.2f}" for a in row["final_accuracies"])
        reached = ", ".join("-" if s is None else str(s) for s in row["steps_to_target"])
        lines.append(
            f"| {arm} | {row['n']} | {100 * row['final_accuracy_mean']:.2f} ± {100 * row['final_accuracy_std']:.2f} "
            f"| {seeds} | {reached} | {row['wall_seconds_mean']:.0f} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        except OSError:
            return ""

    cpu = next(
        (line.split(":", 1)[1].strip() for line in run("lscpu").splitlines() if "Model name" in line), ""
    )
    return {
        "commit": run("git", "rev-parse", "HEAD").strip(),
        "cpu": cpu or platform.processor(),
        "torch": torch.__version__,
        "topofr": __version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-finetune"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=16, help="steps between verifications")
    parser.add_argument("--arms", choices=["both", "finetune", "scratch"], default="both")
    parser.add_argument("--report-only", action="store_true", help="summarise the finished runs only")
    parser.add_argument("--before-only", action="store_true", help="only score A's model on B, untrained")
    parser.add_argument("--only-seed", type=int, default=None, help="run this seed only (parallel processes)")
    parser.add_argument(
        "--target", type=float, default=None, help="accuracy to reach (default: scratch mean)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    arms = ("finetune", "scratch") if args.arms == "both" else (args.arms,)
    if args.before_only:
        print(accuracy_before_training(args.out, latest_checkpoint(args.out / "pretrain_a")))
        return
    if args.report_only:
        init = latest_checkpoint(args.out / "pretrain_a")
        runs = [json.loads(p.read_text()) for p in sorted(args.out.glob("*_seed*/result.json"))]
    else:
        init = pretrain(args.out) if "finetune" in arms else Path("(not needed)")
        seeds = range(args.seeds) if args.only_seed is None else [args.only_seed]
        runs = [run_arm(args.out, arm, seed, init, args.eval_every) for seed in seeds for arm in arms]
        if args.arms != "both" or args.only_seed is not None:
            return
    report = {
        "environment": environment(),
        "pretrained": str(init),
        "accuracy_before_training_on_b": accuracy_before_training(args.out, init),
        **summarise(runs, args.target),
        "runs": runs,
    }
    text = json.dumps(report, indent=1)
    print(text)
    print(markdown(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
