"""Does `topofr hard-samples` find flipped labels? SDS vs entropy alone vs 1 − p_gt alone.

    python benchmarks/label_noise.py                                   # quickstart recipe, 5% noise
    python benchmarks/label_noise.py --identities 40 --images-per-identity 10 \\
        --set model.network=mbf --set schedule.epochs=4                 # a small CPU run

Steps: generate a synthetic packed set; flip the labels of a fraction of its training images to
another, uniformly drawn identity (a new packed set, bytes copied; the truth is kept in
`flipped.npy`); train the recipe on it with `topofr train`; rank with `topofr hard-samples`; print
ROC-AUC and precision@k (k = number flipped) of each score for finding the flipped images.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.stats import rankdata

from topofr_cli.artifacts.checkpoint import latest_checkpoint
from topofr_cli.data import open_dataset
from topofr_cli.data.packed import PackedWriter
from topofr_cli.data.synthetic import generate_synthetic
from topofr_cli.evaluation.baseline import pixel_baseline

console = Console()


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann–Whitney form of the ROC-AUC (ties count one half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, kind="stable")[:k]
    return float(positive[top].mean())


def write_noisy_copy(source_dir: Path, out_dir: Path, fraction: float, seed: int) -> np.ndarray:
    """Copy `source_dir` with `fraction` of its labels moved to another identity; returns the mask."""
    dataset = open_dataset(source_dir)
    rng = np.random.default_rng(seed)
    flipped = np.zeros(len(dataset), dtype=bool)
    flipped[rng.choice(len(dataset), size=round(fraction * len(dataset)), replace=False)] = True
    labels = dataset.labels.copy()
    shift = rng.integers(1, dataset.num_classes, size=int(flipped.sum()))
    labels[flipped] = (labels[flipped] + shift) % dataset.num_classes
    bins = list(dataset.meta.get("verification_bins", []))
    with PackedWriter(out_dir, source=f"{source_dir} with {flipped.sum()} flipped labels") as writer:
        for i in range(len(dataset)):
            writer.add(dataset.encoded(i), int(labels[i]), dataset.source_key(i))
        for name in bins:
            shutil.copyfile(source_dir / name, writer.tmp_dir / name)
        writer.finish(
            {
                "num_classes": dataset.num_classes,
                "verification_bins": bins,
                "flipped_labels": int(flipped.sum()),
            }
        )
    return flipped


def run(command: list[str]) -> float:
    console.print("[dim]$ " + " ".join(command) + "[/]")
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/quickstart.yaml", help="training recipe")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra recipe override for `topofr train` (repeatable)",
    )
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--images-per-identity", type=int, default=20)
    parser.add_argument("--heldout-identities", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.05, help="fraction of training labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256, help="hard-samples batch size")
    parser.add_argument("--work", type=Path, default=None, help="keep everything here (default: a temp dir)")
    parser.add_argument(
        "--mode",
        choices=("noise", "paper"),
        default="noise",
        help="`hard-samples --mode`: p_gt from the scaled cosines (noise, the default) or from "
        "the training margin logits (paper)",
    )
    parser.add_argument(
        "--reuse-run",
        action="store_true",
        help="skip training when the work dir already holds a checkpoint (re-rank only)",
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="topofr-label-noise-"))
    work.mkdir(parents=True, exist_ok=True)
    clean_dir, noisy_dir = work / "synthetic", work / "noisy"
    run_dir, report_dir = work / "run", work / "report"
    timings = {}

    started = time.perf_counter()
    if not clean_dir.exists():
        generate_synthetic(
            clean_dir,
            identities=args.identities,
            images_per_identity=args.images_per_identity,
            heldout_identities=args.heldout_identities,
            pairs=args.pairs,
            seed=args.seed,
            baseline=pixel_baseline,
        )
    if not noisy_dir.exists():
        flipped = write_noisy_copy(clean_dir, noisy_dir, args.noise, args.seed + 1)
        np.save(work / "flipped.npy", flipped)
    flipped = np.load(work / "flipped.npy")
    timings["data"] = time.perf_counter() - started

    train = [
        sys.executable,
        "-m",
        "topofr_cli",
        "train",
        args.recipe,
        "--set",
        f"data.path={noisy_dir}",
        "--set",
        f"train.output={run_dir}",
        "--overwrite",
    ]
    for text in args.overrides:
        train += ["--set", text]
    if not (args.reuse_run and latest_checkpoint(run_dir) is not None):
        timings["train"] = run(train)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(f"{run_dir}: training wrote no checkpoint")
    timings["hard-samples"] = run(
        [
            sys.executable,
            "-m",
            "topofr_cli",
            "hard-samples",
            str(checkpoint),
            "--data",
            str(noisy_dir),
            "--out",
            str(report_dir),
            "--batch-size",
            str(args.batch_size),
            "--top",
            "10",
            "--mode",
            args.mode,
            "--overwrite",  # a re-rank (--reuse-run) replaces the previous report
        ]
    )

    frame = pd.read_parquet(report_dir / "sds.parquet").sort_values("index")
    positive = flipped[frame["index"].to_numpy()]
    k = int(positive.sum())
    signals = {
        "SDS = (2 − γ)·(1 − p_gt)": frame["sds"].to_numpy(),
        "entropy alone": frame["entropy"].to_numpy(np.float64),
        "1 − p_gt alone": 1.0 - frame["p_gt"].to_numpy(np.float64),
        "1 − γ alone": 1.0 - frame["gamma"].to_numpy(),
    }
    table = Table(
        title=f"Finding {k} flipped labels among {len(frame):,} images ({args.noise:.0%} noise, "
        f"--mode {args.mode})"
    )
    table.add_column("score")
    table.add_column("ROC-AUC", justify="right")
    table.add_column(f"precision@{k}", justify="right")
    results = {}
    for name, scores in signals.items():
        results[name] = (roc_auc(scores, positive), precision_at_k(scores, positive, k))
        table.add_row(name, f"{results[name][0]:.4f}", f"{results[name][1]:.4f}")
    console.print(table)
    sds_auc = results["SDS = (2 − γ)·(1 − p_gt)"][0]
    best_single = max(results["entropy alone"][0], results["1 − p_gt alone"][0])
    met = sds_auc >= 0.9 and sds_auc >= best_single - 1e-12
    console.print(
        f"goal (SDS AUC ≥ 0.9 and ≥ best single signal {best_single:.4f}): "
        + ("[green]met[/]" if met else "[red]not met[/]")
    )
    true_labels = open_dataset(clean_dir).labels[frame["index"].to_numpy()]
    recovered = (frame["predicted"].to_numpy() == true_labels)[positive].mean()
    console.print(
        f"model accuracy against the noisy labels {(frame['predicted'] == frame['label']).mean():.3f}, "
        f"against the true labels {(frame['predicted'].to_numpy() == true_labels).mean():.3f}; "
        f"flipped images predicted as their true identity {recovered:.3f}"
    )
    console.print(
        f"checkpoint {checkpoint.name}; "
        f"timings (s): "
        + ", ".join(f"{key} {value:.0f}" for key, value in timings.items())
        + f"; work dir {work}"
    )


if __name__ == "__main__":
    main()
