"""Section 3: two ranks (NCCL on CUDA, gloo on CPU) against one process, per-GPU step throughput, and
the bytes global-scope PTSA all-gathers per step.

Runs only when more than one GPU is visible (`run_multigpu`); `run_two_ranks(device_type="cpu")`
drives the same code over gloo, which is how the test suite keeps it from rotting. The all-gather
figures are also computed from the shapes, so a one-device run still reports them.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from topofr_cli.artifacts.atomic import write_tensors
from topofr_cli.artifacts.checkpoint import load_weights_file
from topofr_cli.artifacts.scratch import scratch_dir
from topofr_cli.bench.plan import BenchPlan, Clock, Say, describe_failure, ignore
from topofr_cli.bench.steps import KINDS, bench_precision, bench_recipe, make_train_step, step_times_ms
from topofr_cli.bench.timing import synthetic_batch
from topofr_cli.config import PTSAConfig, RSPConfig, TopoFRConfig
from topofr_cli.engine.build import wrap_backbone
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.step import TrainStep
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.models import CombinedMarginHead, PartialFC

IMAGE_ELEMENTS = 3 * 112 * 112
EQUALITY_RTOL, EQUALITY_ATOL = 1e-4, 1e-6
TINY_CLASSES, TINY_EMBED, TINY_BATCH = 6, 8, 8  # the equality check: a linear backbone (no BatchNorm)
COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def image_gather_bytes(world_size: int, batch_per_rank: int) -> dict[str, int]:
    """Bytes each rank receives from global-scope PTSA's image all-gather in one step."""
    images = world_size * batch_per_rank * IMAGE_ELEMENTS
    return {
        "world_size": world_size,
        "batch_per_rank": batch_per_rank,
        "float32_bytes": 4 * images,
        "uint8_bytes": images,
    }


class GatherCounter:
    """Counts the bytes every dist.all_gather call of a step receives (images: the 4-D tensors)."""

    def __init__(self) -> None:
        self.images = 0
        self.other = 0
        self._original = dist.all_gather

    def __enter__(self) -> GatherCounter:
        def counting(parts, tensor, *args, **kwargs):
            size = sum(p.numel() * p.element_size() for p in parts)
            if tensor.dim() == 4:
                self.images += size
            else:
                self.other += size
            return self._original(parts, tensor, *args, **kwargs)

        dist.all_gather = counting
        return self

    def __exit__(self, *exc: Any) -> None:
        dist.all_gather = self._original


def _tiny_step(ctx: DistContext, weight: torch.Tensor) -> tuple[TrainStep, nn.Module, PartialFC]:
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_ELEMENTS, TINY_EMBED)).to(ctx.device)
    classifier = PartialFC(TINY_EMBED, TINY_CLASSES, CombinedMarginHead(scale=8.0, m2=0.3)).to(ctx.device)
    classifier.load_full_weight(weight.to(ctx.device))
    config = TopoFRConfig(enabled=True, ptsa=PTSAConfig(scope="global"), rsp=RSPConfig(enabled=False))
    objective = TopoFRObjective(config, world_size=ctx.world_size).to(ctx.device)
    model = wrap_backbone(backbone, ctx)  # DDP when distributed, as the trainer does
    opts = [
        torch.optim.SGD([*backbone.parameters(), *objective.parameters()], lr=0.5, momentum=0.9, fused=True),
        torch.optim.SGD(classifier.parameters(), lr=0.5, momentum=0.9, fused=True),
    ]
    step = TrainStep(
        backbone=model,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=objective,
        optimizers=opts,
        precision="fp32",
        dist_ctx=ctx,
        clip_grad_norm=None,
        channels_last=False,
        horizontal_flip=False,
        seed=0,
    )
    return step, backbone, classifier


def _equality_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (TINY_BATCH, 3, 112, 112), dtype=torch.uint8, generator=g)
    labels = torch.arange(TINY_BATCH) % TINY_CLASSES
    return images, labels, torch.randn(TINY_CLASSES, TINY_EMBED, generator=g) * 0.1


def _equality_step(ctx: DistContext) -> dict[str, Any]:
    """One global-scope TopoFR step (SDE on, RSP off: its draws are per rank) on this rank's share of
    the batch (all of it in one process); what it leaves behind, and the bytes it all-gathered."""
    images, labels, weight = _equality_inputs()
    share = slice(ctx.rank * TINY_BATCH // ctx.world_size, (ctx.rank + 1) * TINY_BATCH // ctx.world_size)
    step, backbone, classifier = _tiny_step(ctx, weight)
    with GatherCounter() as counted:
        result = step(images[share].to(ctx.device), labels[share].to(ctx.device), 0)
    return {
        "backbone": backbone[1].weight.detach().cpu(),
        "classifier": classifier.full_weight().cpu(),
        "loss": result.loss.cpu(),
        "image_gather_bytes": counted.images,
        "other_gather_bytes": counted.other,
    }


def _compare(got: dict[str, Any], want: dict[str, Any]) -> tuple[bool, float]:
    keys = ("backbone", "classifier", "loss")
    worst = max(float((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)) for k in keys)
    return all(torch.allclose(got[k], want[k], rtol=EQUALITY_RTOL, atol=EQUALITY_ATOL) for k in keys), worst


def _throughput(
    ctx: DistContext, network: str, classes: int, batch: int, warmup: int, steps: int
) -> dict[str, Any]:
    images, labels = synthetic_batch(batch, classes, ctx.device, seed=ctx.rank)
    rates = {}
    precision = bench_precision(ctx.device)
    for kind in KINDS:  # TopoFR with global scope: the PTSA loss over every rank's batch
        recipe = bench_recipe(
            network, kind=kind, batch=batch, precision=precision, overrides=["topofr.ptsa.scope=global"]
        )
        step = make_train_step(recipe, classes, ctx)
        times = step_times_ms(step, images, labels, warmup=warmup, steps=steps, time_cap_s=20.0)
        rates[f"{kind}_img_s_per_gpu"] = round(batch * 1e3 / statistics.median(times), 1)
        del step
    return rates


def _worker(
    rank: int,
    port: int,
    out_dir: str,
    device_type: str,
    network: str,
    classes: int,
    batch: int,
    warmup: int,
    steps: int,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(
            backend, rank=rank, world_size=2, device_id=device, timeout=COLLECTIVE_TIMEOUT
        )
    else:
        torch.set_num_threads(1)
        dist.init_process_group(backend, rank=rank, world_size=2, timeout=COLLECTIVE_TIMEOUT)
    ctx = DistContext(rank, rank, 2, device, backend)
    try:
        out: dict[str, Any] = {"equality": _equality_step(ctx)}
        try:
            out["throughput"] = _throughput(ctx, network, classes, batch, warmup, steps)
        except Exception as exc:  # e.g. out of memory: the equality result still comes back
            out["throughput"] = {"status": f"error: {describe_failure(exc)}"}
        write_tensors(Path(out_dir) / f"rank{rank}.pt", out)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_or_kill(ranks: mp.ProcessContext, timeout_s: float) -> None:
    """Wait for both ranks (a failed rank raises here); a hung collective must not hang the bench."""
    deadline = time.monotonic() + timeout_s
    while not ranks.join(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            for process in ranks.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(f"the two ranks did not finish within {timeout_s:.0f} s (killed)")


def run_two_ranks(
    device_type: str,
    network: str,
    classes: int,
    batch: int,
    steps: int,
    *,
    warmup: int = 2,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Spawn two ranks; compare their step with this process's one-process step; per-GPU img/s."""
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device("cpu")
    # PartialFC reads the process group when it is built, so the one-process reference runs here, before
    # (and outside) the ranks' group.
    want = _equality_step(DistContext(0, 0, 1, device, None))
    with scratch_dir(prefix="topofr-bench-ranks-") as tmp:
        ranks_running = mp.spawn(
            _worker,
            args=(_free_port(), tmp, device_type, network, classes, batch, warmup, steps),
            nprocs=2,
            join=False,
        )
        _join_or_kill(ranks_running, timeout_s)
        ranks = [load_weights_file(Path(tmp) / f"rank{r}.pt") for r in range(2)]
    checks = [_compare(r["equality"], want) for r in ranks]
    image_bytes = ranks[0]["equality"]["image_gather_bytes"]
    return {
        "two_ranks_equal_one_process": all(ok for ok, _ in checks),
        "worst_relative_delta": max(worst for _, worst in checks),
        "tolerance": f"rtol {EQUALITY_RTOL:.0e}, atol {EQUALITY_ATOL:.0e}",
        "measured_image_gather_bytes": {
            "world_size": 2,
            "batch_per_rank": TINY_BATCH // 2,
            "bytes": image_bytes,
            "float32_would_be": image_gather_bytes(2, TINY_BATCH // 2)["float32_bytes"],
        },
        "throughput": {
            "network": network,
            "classes": classes,
            "batch_per_gpu": batch,
            **ranks[0]["throughput"],
        },
    }


def run_multigpu(plan: BenchPlan, ctx: DistContext, say: Say = ignore) -> dict[str, Any]:
    clock = Clock(plan.budgets_s["multi-gpu"])
    batch = plan.batches[0]
    section: dict[str, Any] = {
        "image_gather_bytes": [image_gather_bytes(w, 128) for w in (2, 8, 64)],
    }
    devices = torch.cuda.device_count() if ctx.device.type == "cuda" else 1
    if devices < 2:
        section["status"] = f"skipped: {devices} device"
    else:
        try:
            section.update(
                run_two_ranks(
                    "cuda",
                    plan.network,
                    plan.classes,
                    batch,
                    plan.timed_steps,
                    timeout_s=max(30.0, clock.left()),
                )
            )
            section["status"] = "pass" if section["two_ranks_equal_one_process"] else "fail"
        except Exception as exc:
            section["status"] = f"error: {describe_failure(exc)}"
    return {**section, "seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s}
