"""Timing on CPU or CUDA: medians of synchronised calls, peak memory, and the benchmark inputs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device, *, warmup: int = 1) -> float:
    """Median wall time of fn in milliseconds, each call synchronised on both ends (after `warmup` calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def allocated_gib(device: torch.device) -> float | None:
    """GPU memory allocated now (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / 2**30


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset (None on the CPU: no allocator statistics)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch thread(s))"


def synthetic_batch(
    batch: int, classes: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [B, 3, 112, 112] and labels on `device`, as the loader delivers them."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return images.to(device), labels.to(device)


def random_distances(n: int, seed: int, dims: int = 64) -> torch.Tensor:
    """A float32 Euclidean distance matrix of n Gaussian points (exactly symmetric, zero diagonal)."""
    points = torch.randn(n, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist").float()


def tied_distances(n: int, seed: int) -> torch.Tensor:
    """Distances of points on a small integer grid: most lengths repeat, many points coincide."""
    points = torch.randint(0, 4, (n, 3), generator=torch.Generator().manual_seed(seed)).double()
    return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist").float()
