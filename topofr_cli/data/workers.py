"""How many worker processes can help: never more than there are jobs or usable CPU cores.

`--workers 1000` on 100 images once forked 522 processes and ate 5 GB without progress; a worker
beyond the jobs has nothing to do and one beyond the cores only competes for them. The clamp is
applied where the pool or loader is made, and the caller shows the note (one line) when it bites.
"""

from __future__ import annotations

import math
import os


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. under taskset or a container)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def clamp_workers(requested: int, jobs: int, option: str, what: str = "images") -> tuple[int, str | None]:
    """(workers to start, note or None): `requested` capped at `jobs` and at the usable cores; 0
    (work in this process) stays 0."""
    if requested <= 0:
        return 0, None
    cores = usable_cores()
    usable = max(1, min(requested, jobs, cores))
    if usable == requested:
        return usable, None
    return usable, (
        f"{option} {requested}: using {usable} worker{'s' if usable != 1 else ''} "
        f"(at most one per job and per CPU core: {jobs} {what}, {cores} cores)"
    )


def workers_for_cores(requested: int, option: str = "--workers") -> tuple[int, str | None]:
    """(workers, note or None): `requested` capped at the usable cores, for a command that learns its
    job counts later (each loader then caps at its own jobs, silently)."""
    cores = usable_cores()
    if requested <= cores:
        return requested, None
    return (
        cores,
        f"{option} {requested}: using {cores} worker{'s' if cores != 1 else ''} (one per usable CPU core)",
    )


def loader_jobs(num_images: int, batch_size: int) -> int:
    """Batches a loader hands out: a loader worker builds whole batches, so more workers than
    batches wait idle."""
    return max(1, math.ceil(num_images / max(1, batch_size)))
