"""Does `topofr cluster` find the identities? ToMATo (default, untuned) against tuned baselines.

    python benchmarks/cluster.py --model runs/quickstart/checkpoints/step_N.pt     # faces
    python benchmarks/cluster.py --scale 100000                                     # speed only

Faces: synthetic identities never seen in training (a new seed), each with 1 … 10 photos (so
some identities are single photos that should stay on their own), embedded by the model and by a
deliberately noisy copy of it (every weight tensor + Gaussian noise of `--noise` × its std).
Every method clusters the same embeddings (cosine distance). The default gets no knob: its
threshold and its cut come from the persistence diagrams. The baselines are given their best
setting *chosen on the truth* (a grid per method, best BCubed F1), and scikit-learn's
Agglomerative (Ward) the true number of identities: upper bounds, not fair rivals. Reported:
pairwise precision / recall / F1, BCubed precision / recall / F1, clusters found (≥ 2 faces),
faces left on their own, seconds and peak extra memory (each method in a forked process).

`--singletons`: no model, no clustering; for each seed the score of leaving every face on its own
(the floor every method should beat), added to --out's existing JSON as `singletons`.

`--scale N`: N embeddings of N/10 planted identities in 512-d (no model), clustered by the
default on this machine: time and peak memory of the blocked k-NN + ToMATo.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from topofr_cli.clustering.neighbors import unit_rows
from topofr_cli.clustering.run import cluster_embeddings


def pairwise_scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 over pairs of faces put together (noise = its own singleton)."""
    joint = np.unique(np.stack([truth, predicted], 1), axis=0, return_counts=True)[1]
    together = lambda counts: float(np.sum(counts * (counts - 1)) / 2)  # noqa: E731
    both = together(joint)
    pred = together(np.unique(predicted, return_counts=True)[1])
    true = together(np.unique(truth, return_counts=True)[1])
    p = both / pred if pred else 1.0
    r = both / true if true else 1.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def bcubed_scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """BCubed precision, recall, F1: per face, the share of its cluster that is its identity and of its
    identity that is in its cluster, averaged over faces."""
    _, pair_index, pair_count = np.unique(
        np.stack([truth, predicted], 1), axis=0, return_inverse=True, return_counts=True
    )
    shared = pair_count[pair_index.reshape(-1)]
    _, p_index, p_count = np.unique(predicted, return_inverse=True, return_counts=True)
    _, t_index, t_count = np.unique(truth, return_inverse=True, return_counts=True)
    p = float(np.mean(shared / p_count[p_index.reshape(-1)]))
    r = float(np.mean(shared / t_count[t_index.reshape(-1)]))
    return p, r, 2 * p * r / (p + r)


def singletons_apart(labels: np.ndarray) -> np.ndarray:
    """Noise (−1) becomes one singleton cluster per face, as the metrics and the user see it."""
    labels = np.asarray(labels).astype(np.int64).copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=0) + 1 + np.arange(int(noise.sum()))
    return labels


# ------------------------------------------------------------------ methods


def topofr_default(x):
    return cluster_embeddings(x).labels


def topofr_single(x, t):
    return cluster_embeddings(x, method="single", threshold=t).labels


def scipy_linkage(x, method, t):
    import scipy.cluster.hierarchy as hierarchy
    from scipy.spatial.distance import pdist

    return hierarchy.fcluster(hierarchy.linkage(pdist(x, "cosine"), method), t, "distance")


def agglomerative_ward(x, k):
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x)


def dbscan(x, eps, min_samples):
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(x)


def hdbscan(x, min_cluster_size, min_samples):
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True).fit_predict(x)


def _child(queue, function, x, args):
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/statm") as handle:
        now = int(handle.read().split()[1]) * resource.getpagesize() / 1024
    started = time.perf_counter()
    labels = function(x, *args)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((np.asarray(labels), seconds, (peak - min(now, start_rss)) / 1024))


def measured(function, x, *args):
    """Labels, seconds and peak extra memory (MiB) of `function(x, *args)` in a forked process."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, x, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def grid_best(function, x, truth, grid):
    """The setting of `grid` with the best BCubed F1 on the truth (an oracle choice), timed once."""
    best = None
    for args in grid:
        labels = singletons_apart(function(x, *args))
        f1 = bcubed_scores(truth, labels)[2]
        if best is None or f1 > best[0]:
            best = (f1, args)
    return best[1]


def evaluate(x: np.ndarray, truth: np.ndarray, log) -> list[dict]:
    x = unit_rows(x)
    k_true = len(np.unique(truth))
    thresholds = [(t,) for t in np.linspace(0.05, 1.0, 39)]
    methods = [
        ("topofr cluster (ToMATo, default: no setting)", topofr_default, ()),
        (
            "topofr --method single, best threshold",
            topofr_single,
            grid_best(topofr_single, x, truth, thresholds),
        ),
        ("scipy single linkage, best threshold", lambda a, t: scipy_linkage(a, "single", t), None),
        ("scipy average linkage, best threshold", lambda a, t: scipy_linkage(a, "average", t), None),
        ("sklearn Agglomerative (Ward), true K", agglomerative_ward, (k_true,)),
        ("sklearn DBSCAN, best eps / min_samples", dbscan, None),
        ("sklearn HDBSCAN, best sizes", hdbscan, None),
    ]
    grids = {
        "scipy single": thresholds,
        "scipy average": thresholds,
        "sklearn DBSCAN": [(e, m) for e in np.linspace(0.05, 0.9, 35) for m in (1, 2, 3)],
        "sklearn HDBSCAN": [(c, m) for c in (2, 3, 4, 5) for m in (1, 2, 3, 5)],
    }
    rows = []
    for name, function, args in methods:
        if args is None:
            grid = next(g for key, g in grids.items() if name.startswith(key))
            args = grid_best(function, x, truth, grid)
        labels, seconds, memory = measured(function, x, *args)
        labels = np.asarray(labels)
        noise = int((labels < 0).sum())
        clusters = int(sum(c >= 2 for c in np.unique(labels[labels >= 0], return_counts=True)[1]))
        full = singletons_apart(labels)
        row = {
            "method": name,
            "setting": [float(a) for a in args],
            "pairwise": pairwise_scores(truth, full),
            "bcubed": bcubed_scores(truth, full),
            "clusters": clusters,
            "alone": int(noise + sum(c == 1 for c in np.unique(labels[labels >= 0], return_counts=True)[1])),
            "seconds": seconds,
            "peak_mib": memory,
        }
        rows.append(row)
        log(
            f"  {name:48s} BCubed F1 {row['bcubed'][2]:.4f}  pairwise F1 {row['pairwise'][2]:.4f}  "
            f"clusters {clusters:5d}  alone {row['alone']:5d}  {seconds:7.2f} s  {memory:7.1f} MiB  {row['setting']}"
        )
    return rows


# ------------------------------------------------------------------ data


def synthetic_faces(out: Path, identities: int, seed: int):
    """A packed set of `identities` new synthetic identities, 10 photos each; keep 1 … 10 of each."""
    from topofr_cli.data import open_dataset
    from topofr_cli.data.synthetic import generate_synthetic

    if not out.exists():
        generate_synthetic(
            out, identities=identities, images_per_identity=10, heldout_identities=2, pairs=20, seed=seed
        )
    dataset = open_dataset(out)
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(dataset.labels == i), rng.integers(1, 11), replace=False)
            for i in range(identities)
        ]
    )
    return dataset, np.sort(keep)


def singleton_rows(identities: int, seeds: list[int], work: Path) -> list[dict]:
    """Every face on its own, per seed. BCubed precision is then 1 and recall the mean over faces of
    1 / (photos kept of its identity), so the row depends only on the kept counts, which come from the
    same draws as the benchmark's (`synthetic_faces`): the faces count must match the benchmark's."""
    rows = []
    for seed in seeds:
        dataset, kept = synthetic_faces(work / f"faces_seed{seed}", identities, 100 + seed)
        truth = dataset.labels[kept]
        alone = np.arange(len(truth))
        rows.append(
            {
                "seed": seed,
                "faces": len(truth),
                "identities": identities,
                "photos_per_identity": np.bincount(truth, minlength=identities).tolist(),
                "pairwise": pairwise_scores(truth, alone),
                "bcubed": bcubed_scores(truth, alone),
            }
        )
    return rows


def embed(model_path: Path, dataset, rows: np.ndarray, noise: float, seed: int) -> np.ndarray:
    from topofr_cli.evaluation.embed import embed_images
    from topofr_cli.evaluation.model_io import load_model

    backbone = load_model(model_path).backbone
    if noise > 0:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for tensor in backbone.parameters():  # not BatchNorm's running statistics
                if tensor.numel() > 1:
                    tensor += noise * tensor.std() * torch.randn(tensor.shape, generator=generator)
    images = torch.from_numpy(np.stack([dataset[int(i)][0] for i in rows])).permute(0, 3, 1, 2).contiguous()
    return embed_images(backbone, [images[i : i + 64] for i in range(0, len(images), 64)], flip=True)


def planted(n: int, dim: int, seed: int):
    """n unit vectors: n/10 identities (9 … 11 points around a random centre) — a stand-in for faces
    at scale, with an embedding spread like a trained model's (within 0.3 … 0.5 cosine distance)."""
    rng = np.random.default_rng(seed)
    truth = np.sort(rng.integers(0, n // 10, n))
    centres = rng.normal(size=(n // 10, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[truth] + rng.normal(scale=0.028, size=(n, dim)).astype(np.float32)
    return x, truth


def markdown_table(report: dict) -> str:
    """Mean ± std over seeds per (model, method): the README's table."""
    lines = [
        "| embeddings | method | BCubed F1 | pairwise F1 | clusters (≥ 2) | alone | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in report["runs"]:
        for row in run["rows"]:
            groups.setdefault((run["model"], row["method"]), []).append(row)

    def spread(values, digits):
        return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"

    for (model, method), rows in groups.items():
        lines.append(
            f"| {model} | {method} | {spread([r['bcubed'][2] for r in rows], 3)} | "
            f"{spread([r['pairwise'][2] for r in rows], 3)} | {spread([r['clusters'] for r in rows], 0)} | "
            f"{spread([r['alone'] for r in rows], 0)} | {spread([r['seconds'] for r in rows], 2)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Trained checkpoint (e.g. the quickstart's).")
    parser.add_argument("--identities", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--noise", type=float, default=0.15, help="Weight noise of the noisy model (× std).")
    parser.add_argument("--scale", type=int, default=0, help="Also time the default on this many embeddings.")
    parser.add_argument("--work", type=Path, default=Path("runs/cluster_bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cluster.json"))
    parser.add_argument(
        "--singletons",
        action="store_true",
        help="Only score every face left on its own per seed (no model) and add it to --out's JSON.",
    )
    args = parser.parse_args()
    if args.singletons:
        # merged into the existing report, whose runs came from a model this path does not need
        report = json.loads(args.out.read_text()) if args.out.exists() else {}
        report["singletons"] = singleton_rows(args.identities, args.seeds, args.work)
        for row in report["singletons"]:
            print(
                f"seed {row['seed']}: {row['faces']} faces of {row['identities']} identities, every face "
                f"on its own: BCubed F1 {row['bcubed'][2]:.4f} (precision {row['bcubed'][0]:.4f}, "
                f"recall {row['bcubed'][1]:.4f}), pairwise F1 {row['pairwise'][2]:.4f}"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "runs": [],
    }
    for seed in args.seeds if args.model else []:
        dataset, rows = synthetic_faces(args.work / f"faces_seed{seed}", args.identities, 100 + seed)
        truth = dataset.labels[rows]
        for model_name, noise in (
            ("quickstart model", 0.0),
            (f"noisy model (weights + {args.noise} std)", args.noise),
        ):
            print(f"seed {seed}, {model_name}: {len(rows)} faces of {args.identities} identities", flush=True)
            x = embed(args.model, dataset, rows, noise, seed)
            report["runs"].append(
                {
                    "seed": seed,
                    "model": model_name,
                    "faces": len(rows),
                    "identities": args.identities,
                    "rows": evaluate(x, truth, print),
                }
            )
    if args.scale:
        x, truth = planted(args.scale, 512, 0)
        print(
            f"scale: {args.scale:,} planted embeddings (512-d), {len(np.unique(truth)):,} identities",
            flush=True,
        )
        labels, seconds, memory = measured(topofr_default, x)
        report["scale"] = {
            "n": args.scale,
            "seconds": seconds,
            "peak_mib": memory,
            "bcubed": bcubed_scores(truth, singletons_apart(labels)),
            "threads": torch.get_num_threads(),
        }
        print(f"  {seconds:.1f} s, peak {memory:.0f} MiB extra, BCubed {report['scale']['bcubed']}")
    if report["runs"]:
        print(markdown_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
