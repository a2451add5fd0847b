"""`topofr bench`: correctness of every device path against the CPU, training-step throughput (plain vs
TopoFR), its parts, the data loader, and multi-GPU equality and traffic, as one table and one JSON.

`SECTIONS` and `run_bench` load the runner (and torch) on first use, so that `topofr bench --help`
starts without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from topofr_cli.bench.plan import SECTION_BUDGETS_S, BenchPlan, make_plan

_RUNNER_NAMES = ("SECTIONS", "run_bench")

__all__ = ["SECTIONS", "SECTION_BUDGETS_S", "BenchPlan", "make_plan", "run_bench"]


def __getattr__(name: str) -> Any:
    if name not in _RUNNER_NAMES:
        raise AttributeError(f"module 'topofr_cli.bench' has no attribute {name!r}")
    return getattr(importlib.import_module("topofr_cli.bench.runner"), name)
