"""Does each TopoFR mechanism help, and does PTSA without RSP collapse the latent structure?

    python benchmarks/ablation.py --out /work/ablation-runs            # run (resumable) + report
    python benchmarks/ablation.py --out /work/ablation-runs --report-only --figure docs/ablation.png

Arms (one synthetic set, the same recipe, budget and seeds; only `topofr.*` differs):
  plain         margin-softmax baseline (topofr.enabled false)
  ptsa          PTSA aligns the clean batch with its own embeddings: no RSP, no SDE
  ptsa_rsp      PTSA, the backbone sees the RSP-perturbed batch (the paper's fix), no SDE
  topofr        PTSA + RSP + SDE (the full method)

Each (arm, seed) run trains `recipes/quickstart.yaml` with the overrides below through the public
`topofr_cli.engine.trainer.train`, verifies on the held-out synthetic .bin, then measures every
checkpoint with `analyze-topology`'s core (`topofr_cli.analysis.pipeline.analyze`, H0 only) on two
samples: one of the training set, one of a probe set of identities never trained on. A run is done
when its `ablation_result.json` exists; rerunning skips finished runs. The report prints the
accuracy table (mean ± std over seeds) and the end-of-training topology measures, and draws the
collapse curves (mean ± std band over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = {
    "plain": ["topofr.enabled=false"],
    "ptsa": ["topofr.enabled=true", "topofr.rsp.enabled=false", "topofr.sde.enabled=false"],
    "ptsa_rsp": ["topofr.enabled=true", "topofr.rsp.enabled=true", "topofr.sde.enabled=false"],
    "topofr": ["topofr.enabled=true", "topofr.rsp.enabled=true", "topofr.sde.enabled=true"],
}
ARM_LABELS = {
    "plain": "plain (no TopoFR)",
    "ptsa": "PTSA, no RSP",
    "ptsa_rsp": "PTSA + RSP",
    "topofr": "PTSA + RSP + SDE (TopoFR)",
}
TOPOFR_COMMON = [
    "topofr.compat=fixed",
    "topofr.ptsa.form=official",
    "topofr.ptsa.alpha=0.1",
    "topofr.rsp.prob=0.2",
]
# Sized for a 2-core CPU shared with other work: about 1.5 CPU-minutes per run, single-threaded.
TRAIN_SET = {"identities": 40, "images_per_identity": 8, "heldout_identities": 100, "pairs": 200, "seed": 0}
PROBE_SET = {"identities": 32, "images_per_identity": 8, "heldout_identities": 2, "pairs": 20, "seed": 1}
BUDGET = [
    "data.batch_size=16",
    "data.num_workers=0",
    "schedule.epochs=2",
    "schedule.warmup_epochs=0.1",
    "train.save_every=10",
    "train.log_every=5",
    "train.eval_every=0",
    "train.eval_at_epoch_end=false",
    "train.device=cpu",
    "train.precision=fp32",
]
TOPOLOGY_SAMPLES, TOPOLOGY_PER_IDENTITY = 96, 8
RESULT_FILE = "ablation_result.json"
CURVES_FILE = "ablation_curves.csv"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mean_pairwise_cosine(unit_rows) -> float:
    """Mean cosine between different images (1 when every image maps to the same direction)."""
    n = len(unit_rows)
    total = unit_rows.sum(axis=0, dtype="float64")
    return float((total @ total - n) / (n * (n - 1)))


def ensure_data(out: Path) -> tuple[Path, Path]:
    """The training set (with its held-out .bin) and the probe set, generated once."""
    from topofr_cli.data.synthetic import generate_synthetic

    paths = []
    for name, spec in (("train_set", TRAIN_SET), ("probe_set", PROBE_SET)):
        path = out / "data" / name
        if not (path / "meta.json").exists():
            generate_synthetic(path, progress=False, workers=1, overwrite=True, **spec)
        paths.append(path)
    return paths[0], paths[1]


def run_overrides(arm: str, seed: int, run_dir: Path, train_set: Path) -> list[str]:
    return [
        f"data.path={train_set}",
        "data.synthetic=null",
        f"train.output={run_dir}",
        f"train.seed={seed}",
        *BUDGET,
        *(TOPOFR_COMMON if arm != "plain" else []),
        *ARMS[arm],
    ]


def work(arm: str, seed: int, out: Path) -> None:
    """One run, in its own process: train, verify, measure the checkpoints, write the result last."""
    import torch

    from topofr_cli.analysis.collapse import curve_rows
    from topofr_cli.analysis.pipeline import analyze
    from topofr_cli.config import load_recipe
    from topofr_cli.engine.trainer import train
    from topofr_cli.evaluation.baseline import pixel_baseline_accuracy
    from topofr_cli.recipes import PACKAGED_DIR

    torch.set_num_threads(1)
    train_set, probe_set = out / "data" / "train_set", out / "data" / "probe_set"
    run_dir = out / arm / f"seed{seed}"
    recipe = load_recipe(PACKAGED_DIR / "quickstart.yaml", run_overrides(arm, seed, run_dir, train_set))
    started, cpu_start = time.perf_counter(), cpu_seconds()
    result = train(recipe, overwrite=True)
    train_wall, train_cpu = time.perf_counter() - started, cpu_seconds() - cpu_start
    (score,) = result.verification
    frames = []
    for sample_name, dataset in (("train", train_set), ("probe", probe_set)):
        analysis = analyze(
            dataset,
            [run_dir],
            samples=TOPOLOGY_SAMPLES,
            per_identity=TOPOLOGY_PER_IDENTITY,
            dims=(0,),
            seed=0,
            progress=False,
        )
        cosines = {
            point.step: mean_pairwise_cosine(point.embeddings_l2) for point in analysis.targets[0].points
        }
        frame = pd.DataFrame(curve_rows(analysis.targets)).assign(sample=sample_name)
        frames.append(frame.assign(mean_cosine=frame.step.map(cosines)))
    curves = pd.concat(frames).drop(columns="run").assign(arm=arm, seed=seed)
    curves.to_csv(run_dir / CURVES_FILE, index=False)
    summary = {
        "arm": arm,
        "seed": seed,
        "steps": result.steps,
        "accuracy": score.accuracy,
        "accuracy_fold_std": score.accuracy_std,
        "pixel_baseline": pixel_baseline_accuracy(score.path),
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "total_wall_s": time.perf_counter() - started,
        "total_cpu_s": cpu_seconds() - cpu_start,
    }
    tmp = run_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(run_dir / RESULT_FILE)


def run_all(out: Path, arms: list[str], seeds: list[int], jobs: int) -> None:
    """Seed-major order, so that an interrupted study still has every arm at the first seeds."""
    ensure_data(out)
    pending = [
        (arm, seed)
        for seed in seeds
        for arm in arms
        if not (out / arm / f"seed{seed}" / RESULT_FILE).exists()
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def launch(job: tuple[str, int]) -> None:
        arm, seed = job
        log = out / "logs" / f"{arm}_seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"start {arm} seed {seed} (log {log})", flush=True)
        with log.open("w") as handle:
            code = subprocess.run(
                [sys.executable, __file__, "--out", str(out), "--worker", arm, str(seed)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
            ).returncode
        print(f"{'done' if code == 0 else f'FAILED ({code})'} {arm} seed {seed}", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(launch, pending))


def load_results(out: Path, arms: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    results, curves = [], []
    for arm in arms:
        for path in sorted((out / arm).glob(f"seed*/{RESULT_FILE}")):
            results.append(json.loads(path.read_text()))
            curves.append(pd.read_csv(path.parent / CURVES_FILE))
    if not results:
        raise SystemExit(f"{out}: no finished runs yet")
    return pd.DataFrame(results), pd.concat(curves, ignore_index=True)


def mean_std(values: pd.Series, scale: float = 1.0, digits: int = 2) -> str:
    values = values.dropna().to_numpy(dtype=float) * scale
    if len(values) < 2:
        return f"{values[0]:.{digits}f} (one seed)" if len(values) else "-"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def report_table(results: pd.DataFrame, curves: pd.DataFrame, arms: list[str]) -> str:
    """Markdown: accuracy and the last checkpoint's H0 measures per arm (mean ± std over seeds)."""
    last = curves[curves.step == curves.groupby(["arm", "seed"]).step.transform("max")]
    columns = [
        ("latent_l2", "train", "wasserstein_1", "L2 W1 train"),
        ("latent_l2", "probe", "wasserstein_1", "L2 W1 probe"),
        ("latent_l2", "train", "ptsa_official", "L2 PTSA train"),
        ("latent_l2", "probe", "ptsa_official", "L2 PTSA probe"),
        ("latent", "probe", "wasserstein_1", "λ W1 probe"),
        ("latent", "train", "ptsa_official", "λ PTSA train"),
        ("latent", "probe", "ptsa_official", "λ PTSA probe"),
        ("latent_l2", "probe", "shared_h0_fraction", "shared MST edges probe"),
        ("latent_l2", "probe", "mean_cosine", "mean cos probe"),
    ]
    header = ["arm", "n", "verification acc. %", *(title for *_, title in columns), "CPU s/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        rows = results[results.arm == arm]
        if rows.empty:
            continue
        cells = [ARM_LABELS[arm], str(len(rows)), mean_std(rows.accuracy, 100)]
        for space, sample, key, _ in columns:
            picked = last[
                (last.arm == arm) & (last.space == space) & (last["sample"] == sample) & (last.dim == 0)
            ]
            digits = {"wasserstein_1": 1, "ptsa_official": 4}.get(key, 3)
            cells.append(mean_std(picked[key], digits=digits) if key in picked else "-")
        cells.append(f"{rows.total_cpu_s.mean():.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SPACE_TITLES = {"latent_l2": "L2-normalised space", "latent": "λ space (embedding / λ)"}
MEASURE_LABELS = {
    "wasserstein_1": "H0 Wasserstein-1 to the input diagram\n(normalised distance units)",
    "ptsa_official": "PTSA loss, official form\n(per sample, normalised distance units)",
}


def _band(axes, curves: pd.DataFrame, arm: str, key: str, color: str) -> None:
    """Mean over seeds per checkpoint, with a ± 1 std band."""
    by_step = curves.groupby("step")[key]
    mean, std = by_step.mean(), by_step.std(ddof=1).fillna(0.0)
    axes.plot(mean.index, mean.to_numpy(), marker="o", ms=3, color=color, label=ARM_LABELS[arm])
    axes.fill_between(
        mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=color, alpha=0.18, linewidth=0
    )


def _accuracy_panel(axes, results: pd.DataFrame, arms: list[str], colors: dict[str, str]) -> None:
    """Each seed's verification accuracy (dots) and the arm's mean ± std (bar), raw pixels dashed."""
    for position, arm in enumerate(arms):
        values = 100 * results[results.arm == arm].accuracy.to_numpy()
        if len(values):
            axes.scatter(np.full(len(values), position), values, color=colors[arm], s=18, zorder=3)
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            axes.errorbar(
                position + 0.15, values.mean(), yerr=spread, fmt="_", ms=14, color="black", capsize=4
            )
    axes.axhline(
        100 * results.pixel_baseline.mean(), color="black", ls="--", lw=1, label="raw-pixel baseline"
    )
    axes.set_xticks(range(len(arms)), [ARM_LABELS[a].split(" (")[0] for a in arms], fontsize=8, rotation=15)
    axes.set_ylabel("verification accuracy on unseen identities (%)", fontsize=8)
    axes.set_title("held-out .bin, 10-fold accuracy\ndots = seeds, bar = mean ± 1 std", fontsize=9)
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3, axis="y")


def plot(curves: pd.DataFrame, results: pd.DataFrame, arms: list[str], path: Path) -> None:
    """Rows: the L2-normalised and the λ space; columns: H0 W1 and PTSA loss, each on the training
    sample and on the unseen-identity sample."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(17, 10.5), layout="constrained")
    grid = figure.subplots(3, 4)
    colors = dict(zip(ARMS, ("tab:gray", "tab:red", "tab:blue", "tab:green"), strict=True))
    columns = [(key, sample) for key in MEASURE_LABELS for sample in ("train", "probe")]
    for row, space in enumerate(SPACE_TITLES):
        for column, (key, sample) in enumerate(columns):
            axes = grid[row, column]
            for arm in arms:
                picked = curves[
                    (curves.arm == arm)
                    & (curves.space == space)
                    & (curves["sample"] == sample)
                    & (curves.dim == 0)
                ]
                if not picked.empty:
                    _band(axes, picked, arm, key, colors[arm])
            who = "training identities" if sample == "train" else "unseen identities"
            axes.set_title(f"{SPACE_TITLES[space]}\n{TOPOLOGY_SAMPLES} images of {who}", fontsize=9)
            axes.set_xlabel("training step (batches of 16 images)")
            axes.set_ylabel(MEASURE_LABELS[key], fontsize=8)
            axes.grid(alpha=0.3)
    if "mean_cosine" in curves:
        for column, sample in enumerate(("train", "probe")):
            axes = grid[2, column]
            for arm in arms:
                picked = curves[
                    (curves.arm == arm)
                    & (curves.space == "latent_l2")
                    & (curves["sample"] == sample)
                    & (curves.dim == 0)
                ].dropna(subset=["mean_cosine"])
                if not picked.empty:
                    _band(axes, picked, arm, "mean_cosine", colors[arm])
            who = "training identities" if sample == "train" else "unseen identities"
            axes.set_title(f"eval-mode embedding cloud\n{TOPOLOGY_SAMPLES} images of {who}", fontsize=9)
            axes.set_xlabel("training step (batches of 16 images)")
            axes.set_ylabel("mean cosine between different images\n(1 = all in one direction)", fontsize=8)
            axes.grid(alpha=0.3)
    _accuracy_panel(grid[2, 2], results, arms, colors)
    axes = grid[2, 3]
    for arm in arms:
        picked = curves[
            (curves.arm == arm)
            & (curves.space == "latent_l2")
            & (curves["sample"] == "probe")
            & (curves.dim == 0)
        ]
        if not picked.empty:
            _band(axes, picked, arm, "shared_h0_fraction", colors[arm])
    axes.set_title(
        f"scale-free structure: L2-normalised space\n{TOPOLOGY_SAMPLES} images of unseen identities",
        fontsize=9,
    )
    axes.set_xlabel("training step (batches of 16 images)")
    axes.set_ylabel("fraction of input MST edges\nalso in the latent MST", fontsize=8)
    axes.grid(alpha=0.3)
    for axes in grid[1]:  # without PTSA λ stays 1 and the raw embedding norm grows: orders of magnitude apart
        axes.set_yscale("log")
    handles, labels = grid[0, 0].get_legend_handles_labels()
    seeds = results.groupby("arm").size()
    arm_of = {label: arm for arm, label in ARM_LABELS.items()}
    figure.legend(
        handles,
        [f"{label} (n = {seeds.get(arm_of[label], 0)} seeds)" for label in labels],
        loc="outside lower center",
        ncols=4,
        fontsize=9,
    )
    figure.suptitle(
        "Input–latent topology (H0) over training; line = mean over seeds, band = ± 1 std", fontsize=11
    )
    figure.savefig(path, dpi=72)
    from PIL import Image

    with Image.open(path) as image:  # a palette of 128 colours: a third of the bytes, no visible change
        small = image.convert("RGB").quantize(colors=128)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("ablation-runs"), help="study folder (runs, data, logs)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per arm")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each single-threaded)")
    parser.add_argument("--report-only", action="store_true", help="only aggregate the finished runs")
    parser.add_argument("--figure", type=Path, default=None, help="figure path (default OUT/ablation.png)")
    parser.add_argument("--worker", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out.resolve()
    if args.worker:
        work(args.worker[0], int(args.worker[1]), out)
        return
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"--arms: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    if not args.report_only:
        started = time.perf_counter()
        run_all(out, arms, list(range(args.seeds)), args.jobs)
        print(f"study wall time {time.perf_counter() - started:.0f} s")
    results, curves = load_results(out, arms)
    print(report_table(results, curves, arms))
    figure = args.figure or out / "ablation.png"
    plot(curves, results, arms, figure)
    print(f"figure {figure}")


if __name__ == "__main__":
    main()
