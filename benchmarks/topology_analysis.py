"""Time the parts of `topofr analyze-topology` on a synthetic face set.

    python benchmarks/topology_analysis.py [--data DIR] [--samples 512] [--h0-samples 4096] [--device cpu]

Without --data a synthetic packed set (256 identities × 16 images) is generated under a temp dir.
Latent space: a randomly initialised backbone (--network, default mbf) whose BatchNorm statistics are calibrated on the sample (a
fresh network maps every face to almost the same point). Prints one line per measured part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from topofr_cli.analysis.pipeline import input_space_distances, load_sample
from topofr_cli.analysis.spaces import compare_spaces, space_topologies
from topofr_cli.data.loader import normalize
from topofr_cli.models import create_backbone
from topofr_cli.topology import h0_pairs, latent_distances
from topofr_cli.topology.diagrams import h1_diagram


def calibrated_embeddings(
    images: torch.Tensor, device: torch.device, network: str, batch: int = 64
) -> torch.Tensor:
    torch.manual_seed(0)
    model = create_backbone(network, 512).to(device)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    with torch.no_grad():
        model.train()
        model(normalize(images[:batch].to(device)))
        model.eval()
        return torch.cat(
            [model(normalize(images[i : i + batch].to(device))).cpu() for i in range(0, len(images), batch)]
        )


def timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    print(f"{label:<48s} {time.perf_counter() - start:8.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="packed set (default: generate a synthetic one)")
    parser.add_argument("--samples", type=int, default=512, help="sample size for H0 + H1 of both spaces")
    parser.add_argument(
        "--h0-samples", type=int, default=4096, help="sample size for the H0-only timing (0: skip)"
    )
    parser.add_argument("--device", default="cpu", help="device for distances and embeddings")
    parser.add_argument(
        "--network", default="mbf", help="backbone for the latent space (random, BN calibrated)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from topofr_cli.data.synthetic import generate_synthetic
            from topofr_cli.evaluation.baseline import pixel_baseline

            data = Path(tmp) / "synthetic"
            timed(
                "generate synthetic set (256 × 16)",
                lambda: generate_synthetic(
                    data,
                    identities=256,
                    images_per_identity=16,
                    heldout_identities=4,
                    pairs=20,
                    seed=0,
                    progress=False,
                    baseline=pixel_baseline,
                ),
            )
        sample = timed(
            f"decode sample of {args.samples}",
            lambda: load_sample(data, samples=args.samples, per_identity=8, seed=0),
        )
        z = timed(
            f"embed (calibrated {args.network}, untimed by the issue)",
            lambda: calibrated_embeddings(sample.images, device, args.network),
        )
        a_x = timed(
            "input distances A^X (topology.input_distances)", lambda: input_space_distances(sample, device)
        )
        a_z = latent_distances(z)
        start = time.perf_counter()
        spaces = space_topologies({"input": a_x, "latent": a_z}, (0, 1))
        comparison = compare_spaces(spaces["input"], spaces["latent"])
        total = time.perf_counter() - start
        for name, topology in spaces.items():
            print(
                f"  {name}: H0 {topology.seconds['h0']:.2f} s, H1 {topology.seconds['h1']:.2f} s "
                f"({len(topology.diagrams[1])} H1 pairs)"
            )
        print(f"{'H0 + H1 of both spaces + distances (threads)':<48s} {total:8.2f} s")
        print(
            f"  H1 bottleneck {comparison.distances[1].bottleneck:.4g}, "
            f"H0 W2 {comparison.distances[0].wasserstein_2:.4g}"
        )
        # H1 one space at a time, for comparison with the threaded figure above.
        for name, dist in (("input", a_x), ("latent", a_z)):
            timed(f"H1 {name} alone ({args.samples} points)", lambda dist=dist: h1_diagram(dist))
        if args.h0_samples:
            big = timed(
                f"decode sample of {args.h0_samples}",
                lambda: load_sample(data, samples=args.h0_samples, per_identity=None, seed=0),
            )
            dist = timed(f"input distances of {args.h0_samples}", lambda: input_space_distances(big, device))
            pairs = timed(f"H0 (h0_pairs) of {args.h0_samples}", lambda: h0_pairs(dist))
            print(
                f"  {len(pairs)} pairs, max death {float(np.max(dist[pairs[:, 0], pairs[:, 1]].numpy())):.4g}"
            )


if __name__ == "__main__":
    main()
