"""Section 2: how fast the training step runs, plain vs TopoFR, and what its parts cost.

Training steps: median of the timed steps after warm-up (each step synchronised), images/s, the
TopoFR/plain ratio and peak GPU memory, eager and (full plan) torch.compile'd. Parts: the PTSA loss
(forward + backward), RSP and SDE (statistic + GUM + weights) on one batch, and h0 pairs alone.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from topofr_cli.augment import RandomStructurePerturbation
from topofr_cli.bench.plan import COMPILE_RESERVE_S, BenchPlan, Clock, describe_failure
from topofr_cli.bench.steps import make_objective, make_train_step, step_times_ms
from topofr_cli.bench.timing import (
    free_device_memory,
    median_ms,
    peak_memory_gib,
    random_distances,
    reset_peak_memory,
    synthetic_batch,
)
from topofr_cli.data.loader import normalize
from topofr_cli.engine.distributed import DistContext
from topofr_cli.hardness.sds import sde_weights
from topofr_cli.topology import h0_pairs, ptsa_loss

PRECISION = "bf16"
TIMED_STEP_CAP_S = 20.0  # per objective and configuration: a slow device still finishes its section


def _time_objective(
    plan: BenchPlan, ctx: DistContext, kind: str, batch: int, compiled: bool
) -> tuple[float, float | None]:
    """(median step ms, peak GiB) of one objective; the model is freed before returning."""
    images, labels = synthetic_batch(batch, plan.classes, ctx.device)
    free_device_memory(ctx.device)
    reset_peak_memory(ctx.device)
    step = make_train_step(
        plan.network, plan.classes, make_objective(kind), PRECISION, ctx, compile_backbone=compiled
    )
    warmup = plan.warmup_steps + (2 if compiled else 0)  # the first compiled calls compile forward, backward
    times = step_times_ms(
        step, images, labels, warmup=warmup, steps=plan.timed_steps, time_cap_s=TIMED_STEP_CAP_S
    )
    peak = peak_memory_gib(ctx.device)
    del step
    free_device_memory(ctx.device)
    return statistics.median(times), peak


def _step_row(plan: BenchPlan, ctx: DistContext, batch: int, compiled: bool, clock: Clock) -> dict[str, Any]:
    row: dict[str, Any] = {
        "network": plan.network,
        "classes": plan.classes,
        "batch": batch,
        "precision": f"{PRECISION}+channels-last",
        "compile": compiled,
    }
    skip = clock.skip_reason(COMPILE_RESERVE_S if compiled else 0.0)
    if skip:
        return {**row, "status": skip}
    try:
        for kind in ("plain", "topofr"):
            if kind == "topofr" and (skip := clock.skip_reason(COMPILE_RESERVE_S if compiled else 0.0)):
                return {**row, "status": f"TopoFR {skip}"}  # the plain half (a slow compile) spent it
            ms, peak = _time_objective(plan, ctx, kind, batch, compiled)
            row.update(
                {
                    f"{kind}_ms": round(ms, 2),
                    f"{kind}_img_s": round(batch * 1e3 / ms, 1),
                    f"{kind}_peak_gib": None if peak is None else round(peak, 2),
                }
            )
        row["topofr_over_plain"] = round(row["topofr_ms"] / row["plain_ms"], 3)
        row["status"] = "ok"
    except Exception as exc:  # an out-of-memory or a compiler failure is a result, not a crash
        free_device_memory(ctx.device)
        row["status"] = f"error: {describe_failure(exc)}"
    return row


def training_steps(plan: BenchPlan, ctx: DistContext) -> dict[str, Any]:
    clock = Clock(plan.budgets_s["training steps"])
    rows = [
        _step_row(plan, ctx, batch, compiled, clock)
        for compiled in plan.compile_modes
        for batch in plan.batches
    ]
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}


def step_parts(plan: BenchPlan, ctx: DistContext) -> dict[str, Any]:
    """The TopoFR additions on one batch of `part_batch`, each timed on its own (median ms)."""
    clock = Clock(plan.budgets_s["step parts"])
    device, batch = ctx.device, plan.part_batch
    g = torch.Generator().manual_seed(4)
    x = normalize(torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, generator=g)).to(device)
    z = torch.randn(batch, 512, generator=g).to(device).requires_grad_(True)
    entropy = (torch.rand(batch, generator=g, dtype=torch.float64) * 5).to(device)
    p_true = torch.rand(batch, generator=g).to(device)
    rsp, gen = RandomStructurePerturbation(0.2), torch.Generator(device=device)
    parts = {
        "PTSA loss fwd+bwd": lambda: ptsa_loss(x, z).backward(),
        "RSP (p=0.2)": lambda: rsp(x, gen.manual_seed(0)),
        "SDE (statistic + GUM + weights)": lambda: sde_weights(entropy, p_true),
    }
    rows = []
    for name, fn in parts.items():
        skip = clock.skip_reason()
        row: dict[str, Any] = {"part": name, "batch": batch}
        if skip:
            rows.append({**row, "status": skip})
            continue
        try:
            rows.append({**row, "ms": round(median_ms(fn, plan.repeats, device), 3), "status": "ok"})
        except Exception as exc:
            rows.append({**row, "status": f"error: {describe_failure(exc)}"})
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}


def h0_pair_times(plan: BenchPlan, ctx: DistContext) -> dict[str, Any]:
    """h0_pairs of one n×n matrix on the device (no input validation, as in the loss)."""
    clock = Clock(plan.budgets_s["h0 pairs"])
    rows = []
    for n in plan.h0_sizes:
        skip = clock.skip_reason()
        if skip:
            rows.append({"n": n, "status": skip})
            continue
        dist = random_distances(n, seed=n).to(ctx.device)
        ms = median_ms(lambda d=dist: h0_pairs(d, validate=False), plan.repeats, ctx.device)
        rows.append({"n": n, "ms": round(ms, 3), "status": "ok"})
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}
