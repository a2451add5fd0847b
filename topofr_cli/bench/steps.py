"""The training step as `topofr train` runs it, built for measurement.

A bench step is the trainer's step: a recipe (`bench_recipe`, the defaults with the bench's network,
batch and precision) passed to `engine.build.build`. Plain and TopoFR differ in one recipe key,
`topofr.enabled`. Timing interleaves the two (`interleaved_times_ms`), so that a machine that speeds
up or slows down during the measurement (turbo, other work, a GPU warming) affects both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch

from topofr_cli.bench.timing import synchronize
from topofr_cli.config import Recipe, load_recipe
from topofr_cli.engine.build import build
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.step import TrainStep

Kind = Literal["plain", "topofr"]
KINDS: tuple[Kind, Kind] = ("plain", "topofr")
StepFn = Callable[[torch.Tensor, torch.Tensor, int], object]


def bench_precision(device: torch.device, asked: str | None = None) -> str:
    """The precision the bench times in: what was asked, else what trains fast on the device (bf16 on a
    GPU that has it, fp16 with a GradScaler on one that does not, fp32 on the CPU, where autocast to
    bf16 is slower than fp32 on most processors)."""
    if asked not in (None, "auto"):
        return asked
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "fp32"


def bench_recipe(
    network: str,
    *,
    kind: Kind = "plain",
    batch: int,
    precision: str,
    compile_backbone: bool = False,
    overrides: Sequence[str] = (),
) -> Recipe:
    """The default recipe (ArcFace s = 64, m = 0.5, 512-d, SGD, clip 5, channels-last, flips) with the
    bench's network, batch and precision; `kind="topofr"` changes `topofr.enabled` and nothing else.
    `overrides` are `--set`-style `key=value` texts (e.g. `topofr.ptsa.scope=global`)."""
    keys = [
        f"model.network={network}",
        f"data.batch_size={batch}",
        f"train.precision={precision}",
        f"train.compile={str(compile_backbone).lower()}",
        *overrides,
    ]
    if kind == "topofr":
        keys.append("topofr.enabled=true")
    return load_recipe(None, keys)


def make_train_step(recipe: Recipe, classes: int, ctx: DistContext) -> TrainStep:
    """The trainer's step for `recipe` over `classes` classes (in DDP when `ctx` is distributed)."""
    return build(recipe, ctx, num_classes=classes).step


def interleave_order(names: Sequence[str], rounds: int) -> list[str]:
    """Which step runs when: each round runs every step once, in the order of `names` on even rounds
    and reversed on odd ones (A B, B A, A B, …), so neither step always runs right after the other."""
    order: list[str] = []
    for r in range(rounds):
        order.extend(names if r % 2 == 0 else reversed(names))
    return order


def interleaved_times_ms(
    steps: Mapping[str, StepFn],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    warmup: int,
    rounds: int,
    time_cap_s: float = float("inf"),
) -> dict[str, list[float]]:
    """Wall time (ms, synchronised) of each step, per round, after `warmup` untimed calls of each.

    Rounds follow `interleave_order`; a round is never cut in half, so every step has as many times.
    Past `time_cap_s` no new round starts."""
    for step in steps.values():
        for i in range(warmup):
            step(images, labels, i)
    synchronize(images.device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    started = time.perf_counter()
    names = list(steps)
    order = interleave_order(names, rounds)
    for r in range(rounds):
        for name in order[r * len(names) : (r + 1) * len(names)]:
            begin = time.perf_counter()
            steps[name](images, labels, warmup + r)
            synchronize(images.device)
            times[name].append((time.perf_counter() - begin) * 1e3)
        if time.perf_counter() - started > time_cap_s:
            break
    return times


def summarize(
    times: Mapping[str, list[float]], numerator: str = "topofr", denominator: str = "plain"
) -> dict:
    """Median and quartiles of each step's times, and of the per-round ratio numerator/denominator
    (paired by round, so a drift of the machine between rounds cancels)."""
    out: dict[str, float | list[float] | int] = {"rounds": len(times[denominator])}
    for name, samples in times.items():
        out[f"{name}_ms"] = round(statistics.median(samples), 2)
        out[f"{name}_ms_quartiles"] = [round(q, 2) for q in _quartiles(samples)]
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True)]
    out[f"{numerator}_over_{denominator}"] = round(statistics.median(ratios), 3)
    out[f"{numerator}_over_{denominator}_quartiles"] = [round(q, 3) for q in _quartiles(ratios)]
    return out


def _quartiles(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q3


def step_times_ms(
    step: StepFn,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    warmup: int,
    steps: int,
    time_cap_s: float = float("inf"),
) -> list[float]:
    """Wall time of each of `steps` calls of one step (synchronised) after `warmup` untimed ones."""
    return interleaved_times_ms(
        {"step": step}, images, labels, warmup=warmup, rounds=steps, time_cap_s=time_cap_s
    )["step"]
