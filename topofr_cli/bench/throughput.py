"""Section 2: how fast the training step runs, plain vs TopoFR, and what its parts cost.

Training steps: the trainer's plain and TopoFR steps timed interleaved after warm-up (each step
synchronised): medians and quartiles, images/s, the paired TopoFR/plain ratio and the peak GPU memory
each step adds, eager and (full plan) torch.compile'd. Parts: the PTSA loss
(forward + backward), RSP and SDE (statistic + GUM + weights) on one batch, and h0 pairs alone.
"""

from __future__ import annotations

from typing import Any

import torch

from topofr_cli.augment import RandomStructurePerturbation
from topofr_cli.bench.plan import COMPILE_RESERVE_S, BenchPlan, Clock, Say, describe_failure, ignore
from topofr_cli.bench.steps import KINDS, bench_recipe, interleaved_times_ms, make_train_step, summarize
from topofr_cli.bench.timing import (
    allocated_gib,
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

TIMED_STEP_CAP_S = 40.0  # per configuration (both steps): a slow device still finishes its section


def compare_steps(
    network: str,
    classes: int,
    batch: int,
    ctx: DistContext,
    *,
    precision: str,
    warmup: int,
    rounds: int,
    compiled: bool = False,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The plain and the TopoFR training step (one recipe key apart), timed interleaved: per-step
    medians and quartiles, the paired TopoFR/plain ratio, and the peak GPU memory each step adds."""
    images, labels = synthetic_batch(batch, classes, ctx.device)
    steps, peaks = {}, {}
    for kind in KINDS:
        free_device_memory(ctx.device)
        before = allocated_gib(ctx.device)
        reset_peak_memory(ctx.device)
        recipe = bench_recipe(
            network,
            kind=kind,
            batch=batch,
            precision=precision,
            compile_backbone=compiled,
            overrides=overrides,
        )
        steps[kind] = make_train_step(recipe, classes, ctx)
        steps[kind](images, labels, 0)  # builds lazy state (and compiles) while only this model runs
        peak = peak_memory_gib(ctx.device)
        peaks[kind] = None if peak is None else peak - before
    warmup = warmup + (2 if compiled else 0)  # the first compiled calls compile forward, backward
    times = interleaved_times_ms(
        steps, images, labels, warmup=warmup, rounds=rounds, time_cap_s=TIMED_STEP_CAP_S
    )
    del steps
    free_device_memory(ctx.device)
    row = summarize(times)
    for kind in KINDS:
        row[f"{kind}_img_s"] = round(batch * 1e3 / row[f"{kind}_ms"], 1)
        row[f"{kind}_peak_gib"] = None if peaks[kind] is None else round(peaks[kind], 2)
    return row


def _step_row(
    plan: BenchPlan, ctx: DistContext, batch: int, compiled: bool, clock: Clock, say: Say
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "network": plan.network,
        "classes": plan.classes,
        "batch": batch,
        "precision": f"{plan.precision}+channels-last",
        "compile": compiled,
    }
    skip = clock.skip_reason(COMPILE_RESERVE_S if compiled else 0.0)
    if skip:
        return {**row, "status": skip}
    mode = "compiled" if compiled else "eager"
    say(f"{plan.network} B {batch} {plan.precision} {mode}: plain and TopoFR, {plan.timed_steps} rounds")
    try:
        row.update(
            compare_steps(
                plan.network,
                plan.classes,
                batch,
                ctx,
                precision=plan.precision,
                warmup=plan.warmup_steps,
                rounds=plan.timed_steps,
                compiled=compiled,
            )
        )
        row["status"] = "ok"
        say(
            f"{plan.network} B {batch} {mode}: plain {row['plain_ms']:.1f} ms, TopoFR {row['topofr_ms']:.1f} ms, "
            f"TopoFR/plain {row['topofr_over_plain']:.3f}"
        )
    except Exception as exc:  # an out-of-memory or a compiler failure is a result, not a crash
        free_device_memory(ctx.device)
        row["status"] = f"error: {describe_failure(exc)}"
    return row


def training_steps(plan: BenchPlan, ctx: DistContext, say: Say = ignore) -> dict[str, Any]:
    clock = Clock(plan.budgets_s["training steps"])
    rows = [
        _step_row(plan, ctx, batch, compiled, clock, say)
        for compiled in plan.compile_modes
        for batch in plan.batches
    ]
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}


def step_parts(plan: BenchPlan, ctx: DistContext, say: Say = ignore) -> dict[str, Any]:
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
            say(f"{name}: {rows[-1]['ms']:.2f} ms")
        except Exception as exc:
            rows.append({**row, "status": f"error: {describe_failure(exc)}"})
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}


def h0_pair_times(plan: BenchPlan, ctx: DistContext, say: Say = ignore) -> dict[str, Any]:
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
        say(f"n = {n}: {ms:.2f} ms")
    return {"seconds": round(clock.elapsed(), 2), "budget_s": clock.budget_s, "rows": rows}
