"""TopoFR's training-step overhead: one step with everything on (RSP + PTSA + SDE) vs the plain step.

    python benchmarks/step_overhead.py                                   # CUDA: r50, 85,742 classes, B 128/256/512
    python benchmarks/step_overhead.py --device cpu --network r18 --classes 1000 --batch 8 16 --steps 2

Same backbone, head, batch, precision and device for both; only the objective differs (the plain step is
ArcFace through Partial FC; the TopoFR step adds RSP on the batch, the PTSA loss over the batch and the
SDE weighting with its GUM fit). Ratios are time(TopoFR) / time(plain). docs/method.md §4 measured the reference at
2.24× (B 128) and 2.53× (B 256) on an H200.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from train_throughput import images_per_second, init_single_process_group, make_our_step, synthetic_batch

from topofr_cli.config import TopoFRConfig
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.step import effective_precision
from topofr_cli.engine.topofr_objective import TopoFRObjective


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--network", default="r50")
    parser.add_argument("--classes", type=int, default=85_742)
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--precision", default="fp16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--compat", default="fixed", choices=["fixed", "reference"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    ctx = init_single_process_group(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"{args.network}, {args.classes} classes, {effective_precision(args.precision, device)}, {name}, "
        f"torch {torch.__version__}, topofr compat={args.compat}"
    )
    print(f"{'batch':>5} {'plain ms':>9} {'topofr ms':>10} {'ratio':>6}")
    for batch in args.batch:
        images, labels = synthetic_batch(batch, args.classes, device)
        timings = {}
        for label, objective in (
            ("plain", PlainObjective()),
            ("topofr", TopoFRObjective(TopoFRConfig(enabled=True, compat=args.compat))),
        ):
            step = make_our_step(args.network, args.classes, args.precision, ctx, objective=objective)
            rate = images_per_second(step, images, labels, warmup=args.warmup, steps=args.steps)
            timings[label] = 1000.0 * batch / rate
            del step
        print(
            f"{batch:>5} {timings['plain']:>9.1f} {timings['topofr']:>10.1f} "
            f"{timings['topofr'] / timings['plain']:>5.2f}×",
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
