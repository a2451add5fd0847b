"""Section 1: the device computes what the CPU computes, and the training step is finite and sync-free.

Each check is a row {check, ok, detail}: ok is True/False, or None where it does not apply (the
CUDA sync detector on a CPU run). On a CPU run "the device" is the CPU, so the comparisons there are
against an independent CPU computation instead: the accelerator's fixed-round Borůvka against the
early-stopping one, float32 PTSA against float64, chunked GUM stopping against stop-at-once.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from topofr_cli.augment import RandomStructurePerturbation
from topofr_cli.bench.plan import BenchPlan, Clock, Say, describe_failure, ignore
from topofr_cli.bench.steps import bench_recipe, make_train_step
from topofr_cli.bench.timing import free_device_memory, random_distances, synthetic_batch, tied_distances
from topofr_cli.data.loader import normalize
from topofr_cli.engine.distributed import DistContext
from topofr_cli.hardness import gum_posterior, sde_statistic
from topofr_cli.topology import death_times, h0_pairs, ptsa_loss

PTSA_RTOL = 1e-4  # |Δloss| ≤ 1e-4·|loss| and max|Δgrad| ≤ 1e-4·max|grad| (float32 vs the reference)
GUM_ATOL = 1e-9  # on γ, float64 on both sides
FP16_MAX_STEPS = 20  # GradScaler from 65536 reaches 1/16 in 20 halvings


_VERDICTS = {True: "pass", False: "FAIL", None: "n/a"}


def _check(name: str, fn: Callable[[], tuple[bool | None, str]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # a crash is a failed check, reported with its place; the bench goes on
        ok, detail = False, describe_failure(exc)
    return {"check": name, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - started, 2)}


def _h0_check(device: torch.device, make: Callable[[int, int], torch.Tensor], n: int) -> tuple[bool, str]:
    dist = torch.stack([make(n, seed) for seed in range(3)])
    reference = h0_pairs(dist, fixed_rounds=False)  # the CPU algorithm (stops when the tree is complete)
    got = h0_pairs(dist.to(device), fixed_rounds=True).cpu()  # what runs on an accelerator
    same_edges = torch.equal(got, reference)
    same_deaths = torch.equal(death_times(dist, got), death_times(dist, reference))
    versus = "CPU" if device.type != "cpu" else "CPU early-stop (fixed-round Borůvka on the CPU)"
    return (
        same_edges and same_deaths,
        f"3×{n}×{n} vs {versus}: edges {'equal' if same_edges else 'DIFFER'}, "
        f"deaths {'equal' if same_deaths else 'DIFFER'}",
    )


def _ptsa_check(device: torch.device, batch: int) -> tuple[bool, str]:
    g = torch.Generator().manual_seed(3)
    x = normalize(torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, generator=g))
    z = torch.randn(batch, 512, generator=g)
    ref_dtype = torch.float64 if device.type == "cpu" else torch.float32
    worst = 0.0
    for form in ("official", "symmetric"):
        results = []
        for dev, dtype in ((device, torch.float32), (torch.device("cpu"), ref_dtype)):
            zz = z.to(dev, dtype).detach().clone().requires_grad_(True)
            loss = ptsa_loss(x.to(dev, dtype), zz, form)  # type: ignore[arg-type]
            loss.backward()
            results.append((loss.detach().double().cpu(), zz.grad.double().cpu()))
        (loss_d, grad_d), (loss_r, grad_r) = results
        worst = max(
            worst,
            float((loss_d - loss_r).abs() / loss_r.abs().clamp_min(1e-30)),
            float((grad_d - grad_r).abs().max() / grad_r.abs().max().clamp_min(1e-30)),
        )
    versus = "CPU float32" if device.type != "cpu" else "CPU float64"
    return (
        worst <= PTSA_RTOL,
        f"B={batch}, both forms, float32 vs {versus}: worst relative Δ {worst:.1e} "
        f"(tolerance {PTSA_RTOL:.0e}, loss and gradient)",
    )


def _gum_check(device: torch.device, batch: int) -> tuple[bool, str]:
    entropy = torch.rand(batch, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 5
    h = sde_statistic(entropy)
    if device.type == "cpu":
        reference, versus = gum_posterior(h, check_every=1), "stop-at-once (check_every=1)"
    else:
        reference, versus = gum_posterior(h), "CPU"
    got = gum_posterior(h.to(device))
    delta = float((got.gamma.cpu() - reference.gamma).abs().max())
    # another device sums in another order: the 1e-10 stopping test may then fall one iteration apart
    slack = 0 if device.type == "cpu" else 1
    ok = delta <= GUM_ATOL and abs(got.iterations - reference.iterations) <= slack
    return (
        ok,
        f"B={batch} vs {versus}: max|Δγ| {delta:.1e} (tolerance {GUM_ATOL:.0e}), "
        f"iterations {got.iterations} vs {reference.iterations}",
    )


def _rsp_check(device: torch.device, batch: int) -> tuple[bool, str]:
    x = normalize(synthetic_batch(batch, 1, device, seed=9)[0])
    before = x.clone()
    rsp = RandomStructurePerturbation(0.5)
    first, mask1 = rsp(x, torch.Generator(device=device).manual_seed(7))
    second, mask2 = rsp(x, torch.Generator(device=device).manual_seed(7))
    same = torch.equal(first, second) and torch.equal(mask1, mask2)
    untouched = torch.equal(x, before)
    changed = int((first != x).flatten(1).any(1).sum())
    ok = same and untouched and changed > 0
    return (
        ok,
        f"B={batch}, p=0.5: same seed → {'identical' if same else 'DIFFERENT'} output; input "
        f"{'unchanged' if untouched else 'WRITTEN'}; {changed} of {int(mask1.sum())} selected samples changed",
    )


def _step_check(plan: BenchPlan, ctx: DistContext, precision: str) -> tuple[bool, str]:
    """Steps until `check_steps` updates were applied. bf16 must never skip; fp16's GradScaler skips
    while it halves its scale down from 65536 (7 skips for TopoFR on mbf), so it gets FP16_MAX_STEPS."""
    recipe = bench_recipe(plan.check_network, kind="topofr", batch=plan.check_batch, precision=precision)
    step = make_train_step(recipe, plan.check_classes, ctx)
    images, labels = synthetic_batch(plan.check_batch, plan.check_classes, ctx.device, seed=1)
    limit = plan.check_steps if step.scaler is None else FP16_MAX_STEPS
    losses, skipped = [], 0
    while len(losses) - skipped < plan.check_steps and len(losses) < limit:
        result = step(images, labels, len(losses))
        losses.append(float(result.loss))
        skipped += int(result.skipped)
    params_finite = all(bool(torch.isfinite(p).all()) for p in step.backbone_params)
    applied = len(losses) - skipped
    ok = all(torch.isfinite(torch.tensor(losses))) and params_finite and applied == plan.check_steps
    ran = f" (runs as {step.precision} on the CPU)" if step.precision != precision else ""
    scaler = f", GradScaler (scale now {step.scaler.get_scale():g})" if step.scaler is not None else ""
    del step
    free_device_memory(ctx.device)
    shown = ", ".join(f"{v:.3f}" for v in losses[-3:])
    return (
        ok,
        f"{plan.check_network} B={plan.check_batch}{scaler}{ran}: {applied} updates applied, {skipped} "
        f"skipped in {len(losses)} steps; last losses {shown}; weights {'finite' if params_finite else 'NOT FINITE'}",
    )


def _sync_check(plan: BenchPlan, ctx: DistContext) -> tuple[bool | None, str]:
    """Under the CUDA sync detector: the TopoFR step with SDE off must not sync at all; with SDE, the
    only syncs are the GUM's documented ones (one per 16 EM iterations, docs/method.md §1.3)."""
    if ctx.device.type != "cuda":
        return None, "n/a on cpu (needs the CUDA sync detector; the meta-device row covers the hot paths)"
    images, labels = synthetic_batch(plan.check_batch, plan.check_classes, ctx.device, seed=2)
    counts = {}
    for sde in (False, True):
        recipe = bench_recipe(
            plan.check_network,
            kind="topofr",
            batch=plan.check_batch,
            precision="bf16",
            overrides=[f"topofr.sde.enabled={str(sde).lower()}"],
        )
        step = make_train_step(recipe, plan.check_classes, ctx)
        step(images, labels, 0)  # first step: lazy state (momentum, cuDNN plans) is created outside the check
        torch.cuda.synchronize()
        mode = "warn" if sde else "error"
        torch.cuda.set_sync_debug_mode(mode)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step(images, labels, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts[sde] = sum("synchroniz" in str(w.message) for w in caught)
        del step
    free_device_memory(ctx.device)
    return (
        counts[False] == 0,
        f"RSP+PTSA step: {counts[False]} syncs (mode 'error'); with SDE: {counts[True]} "
        f"(the GUM's, one per 16 EM iterations)",
    )


def _meta_check(batch: int) -> tuple[bool, str]:
    """The meta device has no data: any read of a value (a sync on CUDA) raises there."""
    x = torch.empty(batch, 3, 112, 112, device="meta")
    z = torch.empty(batch, 512, device="meta", requires_grad=True)
    h0_pairs(torch.empty(2, batch, batch, device="meta"), validate=False)
    ptsa_loss(x, z, "official").backward()
    ptsa_loss(x, z, "symmetric").backward()
    RandomStructurePerturbation(0.2, compact=False)(x, None)
    return True, f"B={batch}: h0_pairs, PTSA fwd+bwd (both forms), RSP never read a value"


def run_correctness(plan: BenchPlan, ctx: DistContext, say: Say = ignore) -> dict[str, Any]:
    clock = Clock(plan.budgets_s["correctness"])
    device = ctx.device
    n = 256 if plan.quick else 512
    batch = 32 if plan.quick and device.type == "cpu" else 128

    def _row(name: str, fn: Callable[[], tuple[bool | None, str]]) -> dict[str, Any]:
        row = _check(name, fn)
        say(f"{name}: {_VERDICTS[row['ok']]} ({row['seconds']:.1f} s)")
        return row

    rows = [
        _row("h0_pairs, random matrices", lambda: _h0_check(device, random_distances, n)),
        _row("h0_pairs, tie-heavy matrices", lambda: _h0_check(device, tied_distances, n)),
        _row("PTSA loss and gradient", lambda: _ptsa_check(device, batch)),
        _row("GUM posterior", lambda: _gum_check(device, batch)),
        _row("RSP seeded, input untouched", lambda: _rsp_check(device, batch)),
        _row("bf16 TopoFR step finite", lambda: _step_check(plan, ctx, "bf16")),
        _row("fp16 TopoFR step finite", lambda: _step_check(plan, ctx, "fp16")),
        _row("step never syncs (CUDA detector)", lambda: _sync_check(plan, ctx)),
        _row("hot paths sync-free (meta device)", lambda: _meta_check(batch)),
    ]
    failed = [r["check"] for r in rows if r["ok"] is False]
    return {
        "status": "fail" if failed else "pass",
        "failed": failed,
        "seconds": round(clock.elapsed(), 2),
        "budget_s": clock.budget_s,
        "rows": rows,
    }
