"""The numbers docs/method.md §5 quotes, read from the CSVs `benchmarks/early_steps.py` wrote.

    python benchmarks/early_steps_summary.py [benchmarks/results/early_steps] [--input-edges RECIPE]

Prints, per run found (mbf_ and r18_ fixed, reference, plain): the table rows
§5 shows, then the derived figures its prose uses. Every figure is a plain function of the CSV columns,
so the prose can be checked against the committed files without re-running the training steps.
`--input-edges RECIPE` also measures the mean input-space MST edge (A^X, docs/method.md §1.2) on the
first batches the recipe's loader draws (clean images, before flip and RSP): the one §5 figure that
the training CSVs do not hold.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

RUNS = ("mbf_fixed", "mbf_reference", "mbf_plain", "r18_reference", "r18_fixed", "r18_plain")
TABLE = (
    ("L_cls", "loss_cls"),
    ("α·L_topo", "alpha_topo"),
    ("λ", "latent_scale"),
    ("eval cos", "probe_cos"),
    ("eval ‖z‖", "probe_norm"),
    ("train cos", "probe_cos_batchstats"),
    ("train dims", "probe_dims_batchstats"),
    ("emb BN |w|", "emb_bn_weight"),
    ("mean w1·w2", "sds_mean"),
    ("verification", "val_acc"),
)


def read(path: Path) -> dict[int, dict[str, float]]:
    with path.open() as handle:
        return {
            int(row["step"]): {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        }


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.4g}"


def table(name: str, rows: dict[int, dict[str, float]]) -> None:
    print(f"\n{name} ({max(rows)} steps)")
    print("step " + " ".join(f"{label:>12}" for label, _ in TABLE))
    for step, row in rows.items():
        # a plain run has no weighted L_cls: its loss is the mean CE itself
        values = {**row, "loss_cls": row.get("loss_cls", row.get("loss"))}
        print(f"{step:>4} " + " ".join(f"{fmt(values.get(key)):>12}" for _, key in TABLE))


def derived(runs: dict[str, dict[int, dict[str, float]]]) -> None:
    print("\nderived")
    for name, rows in runs.items():
        last = max(rows)
        dims = [rows[s]["probe_dims_batchstats"] for s in range(1, min(last, 5) + 1)]
        print(
            f"{name}: train dims step 1 → {last}: {rows[1]['probe_dims_batchstats']:.1f} → "
            f"{rows[last]['probe_dims_batchstats']:.1f} (change {rows[last]['probe_dims_batchstats'] - rows[1]['probe_dims_batchstats']:+.1f}); "
            f"steps 1–5 within {min(dims):.1f}–{max(dims):.1f}; eval cos ≥ "
            f"{min(r['probe_cos'] for s, r in rows.items() if s > 0):.4f} after step 1"
        )
        if "sds_mean" in rows[1]:
            sds = [r["sds_mean"] for s, r in rows.items() if s > 0]
            print(f"  mean w1·w2 over steps 1–{last}: {min(sds):.3f}–{max(sds):.3f}")
        if "loss_topo" in rows[1]:
            topo = [r["loss_topo"] for s, r in rows.items() if s > 0]
            scaled = [r["loss_topo"] * r.get("latent_scale", 1.0) ** 2 for s, r in rows.items() if s > 0]
            alpha = [r["alpha_topo"] for s, r in rows.items() if s > 0]
            print(
                f"  L_topo {topo[0]:.1f} → {topo[-1]:.1f}; α·L_topo within {min(alpha):.1f}–{max(alpha):.1f}; "
                f"L_topo·λ² within {min(scaled):.0f}–{max(scaled):.0f}; λ {rows[last].get('latent_scale', 1.0):.3f}"
            )
            if topo[-1] < topo[0] and rows[last].get("latent_scale", 1.0) != 1.0:
                # L_topo ≈ Σ (A^Z edge / λ)² / B while the latent edges dwarf the input ones, so the
                # factor λ² explains log(λ²) of the log-decrease and the cloud the rest.
                share = 2 * math.log(rows[last].get("latent_scale", 1.0)) / math.log(topo[0] / topo[-1])
                print(f"  share of the log-decrease of L_topo explained by λ²: {share:.2f}")
        if "grad_norm" in rows[1]:
            print(
                f"  step 1: clipped-group norm before clipping {rows[1]['grad_norm']:.1f}, backbone used "
                f"{rows[1]['backbone_grad_used']:.2f}, classifier used {rows[1]['classifier_grad_used']:.2f}"
            )
    fixed, reference = runs.get("mbf_fixed"), runs.get("mbf_reference")
    if fixed and reference:
        ratio = fixed[1]["classifier_grad_used"] / reference[1]["classifier_grad_used"]
        print(f"classifier step at step 1, fixed / reference: {ratio:.1f}×")
    for family in ("mbf", "r18"):
        plain = runs.get(f"{family}_plain")
        for mode in ("fixed", "reference"):
            topo = runs.get(f"{family}_{mode}")
            if plain and topo:
                last = min(max(topo), max(plain))
                lost = [
                    r[1]["probe_dims_batchstats"] - r[last]["probe_dims_batchstats"] for r in (topo, plain)
                ]
                print(f"{family} dims lost by step {last}: {mode} {lost[0]:.1f}, plain {lost[1]:.1f}")
    for step in (7, 12):
        weights = {n: r[step]["emb_bn_weight"] for n, r in runs.items() if step in r and n.startswith("mbf")}
        print(
            f"emb BN mean |weight| after step {step}: "
            + ", ".join(f"{n} {w:.4f}" for n, w in weights.items())
        )
    if fixed:
        # official form: L_topo = Σ over B − 1 edges of (input edge − latent edge)² / B, input edges ≤ 1
        edges = 31
        rms = math.sqrt(fixed[1]["loss_topo"] * (edges + 1) / edges)
        print(f"step 1 (B = 32): RMS difference of matched MST edges √(L_topo·B/(B−1)) = {rms:.1f}")


def input_edges(recipe_path: str, batches: int = 12) -> None:
    from topofr_cli.config import load_recipe
    from topofr_cli.data import open_dataset
    from topofr_cli.data.loader import make_train_loader, normalize
    from topofr_cli.topology import death_times, h0_pairs
    from topofr_cli.topology.ptsa import input_distances

    recipe = load_recipe(recipe_path, [])
    dataset = open_dataset(recipe.data.path)
    loader = make_train_loader(
        dataset, recipe.data.batch_size, num_workers=0, seed=recipe.train.seed, drop_last=True
    )
    means = []
    for _, (images, _) in zip(range(batches), loader, strict=False):
        dist = input_distances(normalize(images))
        means.append(float(death_times(dist, h0_pairs(dist)).mean()))
    print(
        f"\ninput-space MST edge, mean per batch, first {len(means)} batches of {recipe_path}: "
        f"{min(means):.3f}–{max(means):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("benchmarks/results/early_steps"))
    parser.add_argument("--input-edges", metavar="RECIPE", default=None)
    args = parser.parse_args()
    runs = {
        name: read(args.folder / f"{name}.csv") for name in RUNS if (args.folder / f"{name}.csv").exists()
    }
    for name, rows in runs.items():
        table(name, rows)
    derived(runs)
    if args.input_edges:
        input_edges(args.input_edges)


if __name__ == "__main__":
    main()
