"""Section 2, data: the train loader's images/s on a packed synthetic set, per worker count."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.scratch import scratch_dir
from topofr_cli.bench.plan import BenchPlan, Clock, Say, describe_failure, ignore
from topofr_cli.data import open_dataset
from topofr_cli.data.loader import make_train_loader
from topofr_cli.data.synthetic import generate_synthetic

IMAGES_PER_IDENTITY = 20
TIMED_PASSES = 2


def images_per_second(dataset: Any, batch_size: int, workers: int) -> float:
    """uint8 batches delivered per second over TIMED_PASSES epochs, after one untimed epoch (worker start-up)."""
    loader = make_train_loader(dataset, batch_size, num_workers=workers, seed=0)
    for _ in loader:
        pass
    seen = 0
    start = time.perf_counter()
    for epoch in range(1, TIMED_PASSES + 1):
        loader.sampler.set_epoch(epoch)
        for images, _labels in loader:
            seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def loader_throughput(plan: BenchPlan, say: Say = ignore) -> dict[str, Any]:
    clock = Clock(plan.budgets_s["data loader"])
    identities = max(2, plan.loader_images // IMAGES_PER_IDENTITY)
    rows: list[dict[str, Any]] = []
    with scratch_dir(prefix="topofr-bench-") as tmp:
        data = Path(tmp) / "synthetic"
        generate_synthetic(
            data,
            identities=identities,
            images_per_identity=IMAGES_PER_IDENTITY,
            heldout_identities=2,
            pairs=20,
            seed=0,
            progress=False,
        )
        dataset = open_dataset(data)
        generated_s = clock.elapsed()
        for workers in plan.loader_workers:
            row: dict[str, Any] = {"images": len(dataset), "batch": plan.loader_batch, "workers": workers}
            skip = clock.skip_reason()
            if skip:
                rows.append({**row, "status": skip})
                continue
            try:
                rate = images_per_second(dataset, plan.loader_batch, workers)
                rows.append({**row, "img_s": round(rate, 1), "status": "ok"})
                say(f"{workers} worker(s): {rate:.0f} img/s")
            except Exception as exc:
                rows.append({**row, "status": f"error: {describe_failure(exc)}"})
    return {
        "seconds": round(clock.elapsed(), 2),
        "budget_s": clock.budget_s,
        "generate_seconds": round(generated_s, 2),
        "rows": rows,
    }
