"""TopoFR's training-step overhead: one step with everything on (RSP + PTSA + SDE) vs the plain step.

    python benchmarks/step_overhead.py                                   # CUDA: r50, 85,742 classes, B 128/256/512
    python benchmarks/step_overhead.py --device cpu --network r18 --classes 1000 --batch 8 16 --steps 5

The measurement is `topofr bench`'s (topofr_cli.bench.throughput.compare_steps) at more batch sizes and
compat modes: the trainer's two steps, one recipe key apart, timed interleaved (plain, TopoFR, TopoFR,
plain, …); the ratio is the median of the per-round time(TopoFR) / time(plain), with its quartiles.
docs/method.md §4 measured the reference at 2.24× (B 128) and 2.53× (B 256) on an H200.
"""

from __future__ import annotations

import argparse

import torch

from topofr_cli.bench.steps import bench_precision
from topofr_cli.bench.throughput import compare_steps
from topofr_cli.bench.timing import device_name
from topofr_cli.devices import resolve_device
from topofr_cli.engine.distributed import DistContext


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--network", default="r50")
    parser.add_argument("--classes", type=int, default=85_742)
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--compat", default="fixed", choices=["fixed", "reference"])
    parser.add_argument(
        "--steps", type=int, default=20, help="timed rounds (one step of each kind per round)"
    )
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = resolve_device(args.device)
    ctx = DistContext(0, 0, 1, device, None)
    precision = bench_precision(device, args.precision)
    print(
        f"{args.network}, {args.classes} classes, {precision}, {device_name(device)}, "
        f"torch {torch.__version__}, topofr compat={args.compat}"
    )
    print(f"{'batch':>5} {'plain ms':>9} {'topofr ms':>10} {'ratio':>6} {'quartiles':>13}")
    for batch in args.batch:
        row = compare_steps(
            args.network,
            args.classes,
            batch,
            ctx,
            precision=precision,
            warmup=args.warmup,
            rounds=args.steps,
            overrides=(f"topofr.compat={args.compat}",),
        )
        low, high = row["topofr_over_plain_quartiles"]
        print(
            f"{batch:>5} {row['plain_ms']:>9.1f} {row['topofr_ms']:>10.1f} {row['topofr_over_plain']:>5.2f}× "
            f"{low:>6.2f}–{high:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
