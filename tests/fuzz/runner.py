"""Run seeded mutated inputs through the readers in a worker process and classify each outcome.

Outcomes: `project_error` (TopofrError: the one-line message users get), `accepted` (read without
error), `other` (any other exception: a traceback for the user; goal 0), `hang` (over the per-input
timeout, counted in the worker's CPU time; the worker is killed and replaced), `memory` (the worker's address-space limit was hit, even
if a reader then turned the MemoryError into a TopofrError), `crash` (the worker died, e.g. a
segfault in a C extension). The worker runs the readers' Python code directly (no CLI, no
subprocess per input); it exists so that a hang or a crash cannot take the campaign down with it and
so that `resource.setrlimit` bounds its memory without limiting the caller.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("project_error", "accepted", "other", "hang", "memory", "crash")


@dataclass
class Outcome:
    target: str
    index: int
    kind: str
    detail: str = ""
    peak_rss_mb: float = 0.0
    seconds: float = 0.0


@dataclass
class Report:
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    baseline_rss_mb: float = 0.0

    def counts(self, target: str | None = None) -> Counter:
        return Counter(o.kind for o in self.outcomes if target is None or o.target == target)

    @property
    def peak_rss_mb(self) -> float:
        return max([o.peak_rss_mb for o in self.outcomes], default=self.baseline_rss_mb)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind not in ("project_error", "accepted")]

    def summary(self) -> str:
        lines = [f"{'target':<11} {'inputs':>6} " + " ".join(f"{k:>13}" for k in KINDS)]
        for target in dict.fromkeys(o.target for o in self.outcomes):
            counts = self.counts(target)
            lines.append(
                f"{target:<11} {sum(counts.values()):>6} " + " ".join(f"{counts[k]:>13}" for k in KINDS)
            )
        total = self.counts()
        lines.append(f"{'all':<11} {sum(total.values()):>6} " + " ".join(f"{total[k]:>13}" for k in KINDS))
        lines.append(
            f"peak RSS of the worker {self.peak_rss_mb:.0f} MB (after imports and seeds: "
            f"{self.baseline_rss_mb:.0f} MB); seed {self.seed}"
        )
        return "\n".join(lines)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _caused_by_memory(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:  # readers convert with `from None`; __context__ still holds it
        if isinstance(exc, MemoryError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "topofr_cli" in f.filename] or frames
    frame = own[-1] if own else None
    place = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {str(exc)[:160]}{place}"


def run_one(target_name: str, index: int, seed: int, seeds_dir: Path, scratch: Path) -> Outcome:
    """One input: copy the target's seed files, let the target mutate and read them, classify."""
    from fuzz.targets import TARGETS
    from topofr_cli.errors import TopofrError

    rng = np.random.default_rng([seed, zlib.crc32(target_name.encode()), index])
    case = scratch / f"{target_name}-{index}"
    shutil.copytree(seeds_dir / target_name, case, symlinks=True)
    start = time.perf_counter()
    try:
        TARGETS[target_name].run(case, rng)
        kind, detail = "accepted", ""
    except TopofrError as exc:
        kind, detail = ("memory" if _caused_by_memory(exc) else "project_error"), str(exc)[:200]
    except MemoryError as exc:
        kind, detail = "memory", _where(exc)
    except Exception as exc:  # noqa: BLE001 - the point is to catch what escapes
        kind, detail = "other", _where(exc)
    finally:
        shutil.rmtree(case, ignore_errors=True)
    return Outcome(target_name, index, kind, detail, _rss_mb(), time.perf_counter() - start)


def _import_reader_libraries() -> None:
    """Load what the readers load lazily before the address-space limit is measured: libraries map
    large regions when first imported (arrow's allocator, OpenCV's thread pool), which must count as
    the interpreter's, not as the memory an input made the reader use."""
    import importlib

    for name in ("PIL.Image", "pyarrow", "pyarrow.parquet", "pandas", "yaml", "cv2"):
        try:
            importlib.import_module(name)
        except ImportError:  # cv2 is optional (the detect extra)
            pass


def _worker(connection, seeds_dir: str, scratch: str, memory_mb: int) -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    _import_reader_libraries()
    warnings.simplefilter("ignore")  # PIL's warnings about corrupt EXIF etc.: noise at this volume
    if memory_mb:
        with open("/proc/self/status") as status:
            size_kb = int(next(line for line in status if line.startswith("VmSize:")).split()[1])
        limit = size_kb * 1024 + memory_mb * 2**20  # the interpreter and its libraries, plus the budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    connection.send(_rss_mb())
    while True:
        job = connection.recv()
        if job is None:
            return
        connection.send(run_one(*job, Path(seeds_dir), Path(scratch)))


class _Worker:
    def __init__(self, seeds_dir: Path, scratch: Path, memory_mb: int) -> None:
        context = multiprocessing.get_context("spawn")
        # glibc reserves 64 MB of address space per malloc arena and arrow its own pool: both inflate
        # RLIMIT_AS accounting with memory no input asked for (the child inherits these at spawn)
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker, args=(child, str(seeds_dir), str(scratch), memory_mb), daemon=True
        )
        self.process.start()
        child.close()
        self.baseline_rss_mb = self.connection.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def build_seeds(folder: Path, targets: list[str]) -> None:
    from fuzz.targets import TARGETS

    for name in targets:
        (folder / name).mkdir(parents=True)
        TARGETS[name].seed(folder / name)


def run_campaign(
    inputs: dict[str, int], *, seed: int = 0, timeout_s: float = 20.0, memory_mb: int = 1536, on_outcome=None
) -> Report:
    """`inputs[target]` mutated inputs per target, each in the worker under `timeout_s` and `memory_mb`."""
    report = Report(seed=seed)
    with tempfile.TemporaryDirectory(prefix="topofr-fuzz-") as base:
        seeds_dir, scratch = Path(base) / "seeds", Path(base) / "scratch"
        scratch.mkdir()
        build_seeds(seeds_dir, list(inputs))
        worker = _Worker(seeds_dir, scratch, memory_mb)
        report.baseline_rss_mb = worker.baseline_rss_mb
        try:
            for target, count in inputs.items():
                for index in range(count):
                    outcome = _send(worker, (target, index, seed), timeout_s)
                    if outcome.kind in ("hang", "crash"):
                        worker.stop()
                        _clear(scratch)
                        worker = _Worker(seeds_dir, scratch, memory_mb)
                    report.outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
            worker.connection.send(None)
        finally:
            worker.stop()
    return report


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; fields 14 and 15 of its stat line)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _send(worker: _Worker, job: tuple, timeout_s: float) -> Outcome:
    """Run one job; a hang is `timeout_s` of the worker's CPU time (a loop) or 10x that of wall time
    (blocked): on a shared machine a starved worker is slow in wall time without being stuck."""
    target, index, _ = job
    start, start_cpu = time.perf_counter(), _cpu_seconds(worker.process.pid)
    try:
        worker.connection.send(job)
        while not worker.connection.poll(1.0):
            cpu, wall = _cpu_seconds(worker.process.pid) - start_cpu, time.perf_counter() - start
            if cpu > timeout_s or wall > 10 * timeout_s:
                return Outcome(
                    target, index, "hang", f"no answer after {cpu:.0f} s CPU, {wall:.0f} s wall", 0.0, wall
                )
        return worker.connection.recv()
    except (EOFError, ConnectionError, OSError):
        worker.process.join(5)
        return Outcome(
            target,
            index,
            "crash",
            f"worker died (exit code {worker.process.exitcode})",
            0.0,
            time.perf_counter() - start,
        )


def _clear(scratch: Path) -> None:
    for entry in scratch.iterdir():
        shutil.rmtree(
            entry, ignore_errors=True
        ) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


__all__ = ["KINDS", "Outcome", "Report", "run_campaign"]
