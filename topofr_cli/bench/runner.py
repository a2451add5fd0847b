"""`topofr bench` as one function: plan, run every section in order, return one JSON-ready dict.

Each section starts with an "info" line (its name and budget) and reports its measurements as "log"
lines through `topofr_cli.progress`: a terminal shows a bar per section, a redirected stdout a line per
measurement, so a long run is never silent."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from topofr_cli.bench.correctness import run_correctness
from topofr_cli.bench.loader_speed import loader_throughput
from topofr_cli.bench.multigpu import run_multigpu
from topofr_cli.bench.plan import TOTAL_BUDGET_S, BenchPlan, Say, make_plan
from topofr_cli.bench.steps import bench_precision
from topofr_cli.bench.throughput import h0_pair_times, step_parts, training_steps
from topofr_cli.bench.timing import device_name
from topofr_cli.devices import resolve_device
from topofr_cli.engine.distributed import DistContext
from topofr_cli.progress import SILENT, Progress, stage

FORMAT_VERSION = 1
# (key in the result, what it runs); throughput's parts are nested under "throughput"
SECTIONS: list[tuple[str, str, Callable[[BenchPlan, DistContext, Say], dict[str, Any]]]] = [
    ("correctness", "correctness", run_correctness),
    ("throughput.training_steps", "training steps", training_steps),
    ("throughput.step_parts", "step parts", step_parts),
    ("throughput.h0_pairs", "h0 pairs", h0_pair_times),
    ("throughput.data_loader", "data loader", lambda plan, ctx, say: loader_throughput(plan, say)),
    ("multi_gpu", "multi-gpu", run_multigpu),
]


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": device.type,
        "device_name": device_name(device),
        "visible_gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_bench(
    device_choice: str,
    quick: bool,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
    *,
    precision: str | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Every section on one device; `on_section(key, section)` is called as each one finishes.

    `precision`: the training steps' (fp32, bf16, fp16); None or "auto": the device's
    (`steps.bench_precision`: bf16 on a GPU that has it, fp32 on the CPU)."""
    started = time.perf_counter()
    device = resolve_device(device_choice)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = (
            True  # as training would: fixed shapes, so tune the convolutions once
        )
    plan = make_plan(device.type, quick, os.cpu_count() or 1)
    plan = dataclasses.replace(plan, precision=bench_precision(device, precision))
    ctx = DistContext(0, 0, 1, device, None)
    result: dict[str, Any] = {
        "topofr_bench": FORMAT_VERSION,
        "quick": quick,
        "environment": environment(device),
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "budgets_s"},
        "budgets_s": plan.budgets_s,
        "total_budget_s": TOTAL_BUDGET_S,
    }
    for number, (key, budget_name, run) in enumerate(SECTIONS, 1):
        left = max(0.0, TOTAL_BUDGET_S - (time.perf_counter() - started))
        budgets = {**plan.budgets_s, budget_name: min(plan.budgets_s[budget_name], left)}
        progress.message(
            "info", f"bench {number}/{len(SECTIONS)}: {budget_name} (budget {budgets[budget_name]:.0f} s)"
        )

        def say(text: str, name: str = budget_name) -> None:
            progress.message("log", f"  {name}: {text}")

        with stage(progress, budget_name, transient=True):
            part = run(dataclasses.replace(plan, budgets_s=budgets), ctx, say)
        parent, _, child = key.partition(".")
        if child:
            result.setdefault(parent, {})[child] = part
        else:
            result[parent] = part
        if on_section is not None:
            on_section(key, part)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def section(result: dict[str, Any], key: str) -> dict[str, Any]:
    parent, _, child = key.partition(".")
    return result[parent][child] if child else result[parent]
