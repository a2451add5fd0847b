"""What `topofr bench` runs: sizes per mode (full or --quick) and each section's time budget.

The full CUDA plan is sized to finish in ≤ 8 minutes on one H200. Every section keeps a clock: once
its budget is spent it starts no further measurement and marks the rows it skipped, so one slow part
(a cold `torch.compile`) cannot push the whole command past its limit.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, replace

# seconds per section on the full CUDA plan (sum 435 s; a row started in time may overrun a little)
SECTION_BUDGETS_S = {
    "correctness": 60,
    "training steps": 240,
    "step parts": 15,
    "h0 pairs": 15,
    "data loader": 45,
    "multi-gpu": 60,
}
# the whole command: a section never gets more than what is left of this (≤ 8 min with start-up)
TOTAL_BUDGET_S = 450
# a section's progress lines: `say(text)` (topofr_cli.progress "log" lines, shown when not a terminal)
Say = Callable[[str], None]


def ignore(text: str) -> None:
    """A `Say` that shows nothing."""


# a compiled row is not started with less than this left of its section's budget (cold compiles of r50)
COMPILE_RESERVE_S = 90


@dataclass(frozen=True)
class BenchPlan:
    device: str  # "cuda" or "cpu"
    quick: bool
    network: str
    classes: int
    batches: tuple[int, ...]
    compile_modes: tuple[bool, ...]
    _: KW_ONLY  # at most six fields by position
    warmup_steps: int
    timed_steps: int  # timed steps of each kind (plain, TopoFR), interleaved: rounds
    check_network: str  # the bf16/fp16 step checks
    check_classes: int
    check_batch: int
    check_steps: int  # updates each precision's step check must apply
    h0_sizes: tuple[int, ...]
    part_batch: int
    repeats: int  # timed calls per small measurement (median)
    loader_images: int
    loader_workers: tuple[int, ...]
    loader_batch: int
    precision: str = "bf16"  # the training steps' (runner: from the device, steps.bench_precision)
    budgets_s: dict[str, float] = field(default_factory=lambda: dict(SECTION_BUDGETS_S))


def make_plan(device: str, quick: bool, cpu_count: int) -> BenchPlan:
    """The full plan is the one the GPU claims are about (r50, 85,742 classes, B 128/256, eager and
    compiled); --quick keeps every section but shrinks it (a tiny network on the CPU, no compile)."""
    workers = tuple(sorted({0, min(2, cpu_count), min(8, cpu_count)}))
    full = BenchPlan(
        device=device,
        quick=quick,
        network="r50",
        classes=85_742,
        batches=(128, 256),
        compile_modes=(False, True),
        warmup_steps=5,
        timed_steps=20,
        check_network="r50",
        check_classes=85_742,
        check_batch=128,
        check_steps=3,
        h0_sizes=(128, 512, 1024),
        part_batch=128,
        repeats=20,
        loader_images=2_000,
        loader_workers=workers,
        loader_batch=128,
    )
    if device == "cuda" and not quick:
        return full
    if device == "cuda":
        return replace(
            full, batches=(128,), compile_modes=(False,), warmup_steps=3, timed_steps=10, repeats=10,
            loader_images=1_000,
        )  # fmt: skip
    eager_small = {"compile_modes": (False,), "warmup_steps": 1}
    if not quick:  # a CPU run without --quick: still r50-shaped, but small enough to finish
        return replace(
            full, **eager_small, network="r18", classes=10_000, batches=(32,), timed_steps=7,
            check_network="r18", check_classes=1_000, check_batch=16, repeats=5, loader_images=1_000,
            loader_batch=64,
        )  # fmt: skip
    return replace(
        full, **eager_small, network="mbf", classes=1_000, batches=(8,), timed_steps=7,
        check_network="mbf", check_classes=100, check_batch=4, check_steps=2, h0_sizes=(128, 512),
        part_batch=32, repeats=3, loader_images=192, loader_workers=(0, min(2, cpu_count)), loader_batch=32,
    )  # fmt: skip


class Clock:
    """A section's stopwatch against its budget."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def skip_reason(self, reserve_s: float = 0.0) -> str | None:
        """Why the next measurement is not started, or None when there is time for it."""
        if self.left() <= reserve_s:
            return f"skipped: section budget {self.budget_s:.0f} s spent"
        return None


def describe_failure(exc: BaseException) -> str:
    """The exception's first line and the innermost frame of this package that raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "topofr_cli" in f.filename]
    place = (
        f" (at {frames[-1].filename.rsplit('topofr_cli', 1)[-1].lstrip('/')}:{frames[-1].lineno})"
        if frames
        else ""
    )
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{place}"
