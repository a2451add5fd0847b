"""Training-step throughput: our step vs the same step written the straightforward way.

(`topofr bench` measures our plain and TopoFR steps; this script adds the straightforward baseline.)

    python benchmarks/train_throughput.py                        # CUDA: r50, 85,742 classes, B 128/256, bf16+fp16
    python benchmarks/train_throughput.py --device cpu --network r18 --classes 1000 --batch 16 --steps 3

Both steps train the same backbone with the same ArcFace head on synthetic uint8 tensors, inside a
one-process DDP group (gloo on CPU, nccl on CUDA):
- ours: backbone in DDP, Partial FC classifier outside it, channels-last, autocast (bf16, or fp16 with a
  GradScaler), fused SGD, no host–device sync in the step (topofr_cli.engine.step.TrainStep);
- baseline: NCHW, the classifier weight inside the DDP module (its full gradient all-reduced), the default
  (for-each) SGD, F.cross_entropy over the margin logits, and the loss read every step (`.item()`), as
  insightface- and reference-style loops do. Same autocast precision (fp16 with a GradScaler), fp32 master weights.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from topofr_cli.bench.steps import bench_recipe, make_train_step, step_times_ms
from topofr_cli.bench.timing import synthetic_batch
from topofr_cli.data.loader import normalize
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.step import TrainStep, effective_precision
from topofr_cli.models import CombinedMarginHead, create_backbone


def init_single_process_group(device: torch.device) -> DistContext:
    if not dist.is_initialized():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    return DistContext(0, 0, 1, device, "nccl" if device.type == "cuda" else "gloo")


def make_our_step(
    network: str,
    classes: int,
    batch: int,
    precision: str,
    ctx: DistContext,
    *,
    compile_backbone: bool = False,
) -> TrainStep:
    """The trainer's plain step (engine.build, as `topofr bench` builds it), in the one-process DDP group."""
    recipe = bench_recipe(network, batch=batch, precision=precision, compile_backbone=compile_backbone)
    return make_train_step(recipe, classes, ctx)


def images_per_second(step, images: torch.Tensor, labels: torch.Tensor, *, warmup: int, steps: int) -> float:
    """Batch size over the median step time."""
    times = step_times_ms(step, images, labels, warmup=warmup, steps=steps)
    return images.shape[0] * 1e3 / statistics.median(times)


class _BackboneAndClassifier(nn.Module):
    """The straightforward layout: one module, so DDP all-reduces the classifier's gradient too."""

    def __init__(self, network: str, classes: int) -> None:
        super().__init__()
        self.backbone = create_backbone(network, 512)
        self.weight = nn.Parameter(torch.normal(0, 0.01, (classes, 512)))
        self.head = CombinedMarginHead(64.0, 1.0, 0.5, 0.0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = self.backbone(x)
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight))
        return F.cross_entropy(self.head(cosine, labels), labels)


def make_baseline_step(network: str, classes: int, precision: str, ctx: DistContext):
    torch.manual_seed(0)
    module = _BackboneAndClassifier(network, classes).to(ctx.device)
    model = DistributedDataParallel(module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    precision = effective_precision(precision, ctx.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(ctx.device.type) if precision == "fp16" else None

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> float:
        x = normalize(images)
        optimizer.zero_grad()
        with torch.autocast(ctx.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(x, labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.backbone.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.backbone.parameters(), 5.0)
            optimizer.step()
        return loss.item()

    return step


@dataclass
class Row:
    batch: int
    precision: str
    ours: float
    baseline: float


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--network", default="r50")
    parser.add_argument("--classes", type=int, default=85_742)
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time our step with torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    ctx = init_single_process_group(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(f"{args.network}, {args.classes} classes, {name}, torch {torch.__version__}")
    print(
        f"{'batch':>5} {'precision':>9} {'ours img/s':>11} {'baseline':>9} {'speed-up':>8}"
        + (f" {'ours+compile':>12}" if args.compile else "")
    )
    for batch in args.batch:
        images, labels = synthetic_batch(batch, args.classes, device)
        for precision in args.precision:
            used = effective_precision(precision, device)
            ours = images_per_second(
                make_our_step(args.network, args.classes, batch, precision, ctx),
                images,
                labels,
                warmup=args.warmup,
                steps=args.steps,
            )
            base = images_per_second(
                make_baseline_step(args.network, args.classes, precision, ctx),
                images,
                labels,
                warmup=args.warmup,
                steps=args.steps,
            )
            line = f"{batch:>5} {used:>9} {ours:>11.1f} {base:>9.1f} {ours / base:>7.2f}×"
            if args.compile:
                compiled = images_per_second(
                    make_our_step(args.network, args.classes, batch, precision, ctx, compile_backbone=True),
                    images,
                    labels,
                    warmup=args.warmup,
                    steps=args.steps,
                )
                line += f" {compiled:>12.1f}"
            print(line, flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
