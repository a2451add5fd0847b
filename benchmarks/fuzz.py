"""Long fuzz run over every reader of user files (the CI-sized run is tests/fuzz/test_fuzz.py).

Mutates valid seeds written by the project's own code (RecordIO, .bin, packed sets, images, image
folders, recipes, checkpoints), builds hostile inputs with intent (crafted numpy dtype states,
allocation-multiplying pickles, every PIL pixel mode with EXIF orientations, models with non-finite
weights, writes under a file-size limit, absurd landmarks, pairs CSVs; tests/fuzz/targets_hostile.py)
and reads each result in a worker process under a per-input timeout
and an address-space limit, then prints how many inputs gave a project error (the one-line
message), were accepted, escaped as another exception (goal 0), hung, hit the memory limit or
crashed the worker, and the worker's peak RSS.

    nice -n 10 python benchmarks/fuzz.py --inputs 1000 --count checkpoint=200 \
        --count nonfinite_model=200 --seed 19 --json fuzz.json
    python benchmarks/fuzz.py --inputs 200 --targets recipe,bin --json fuzz.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the harness lives with the tests

from fuzz.runner import KINDS, run_campaign  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1500, help="Mutated inputs per target.")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="Comma-separated subset of: " + ", ".join(TARGETS)
    )
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        metavar="TARGET=N",
        help="Inputs for one target instead of --inputs (e.g. checkpoint=300: each takes ~20x longer).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="Seconds per input before it counts as a hang."
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=1536,
        help="Address space the worker may add to what it holds after its imports.",
    )
    parser.add_argument("--json", type=Path, help="Also write the counts and every non-project outcome here.")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")

    start = time.perf_counter()
    done = Counter()

    def progress(outcome) -> None:
        done[outcome.kind] += 1
        if sum(done.values()) % 500 == 0:
            print(
                f"  {sum(done.values())} inputs, {time.perf_counter() - start:.0f} s: {dict(done)}",
                flush=True,
            )

    counts = {t: args.inputs for t in targets}
    for text in args.count:
        name, _, number = text.partition("=")
        if name not in counts or not number.isdigit():
            parser.error(f"--count {text!r}: expected TARGET=N for one of {', '.join(targets)}")
        counts[name] = int(number)
    report = run_campaign(
        counts, seed=args.seed, timeout_s=args.timeout, memory_mb=args.memory_mb, on_outcome=progress
    )
    print(report.summary())
    print(f"{len(report.outcomes)} inputs in {time.perf_counter() - start:.0f} s")
    causes = Counter((o.target, o.kind, o.detail) for o in report.failures())
    for (target, kind, detail), count in causes.most_common():
        print(f"  {count:5d} {target} {kind}: {detail}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "inputs_per_target": counts,
                    "counts": {k: report.counts()[k] for k in KINDS},
                    "per_target": {t: dict(report.counts(t)) for t in targets},
                    "peak_rss_mb": report.peak_rss_mb,
                    "baseline_rss_mb": report.baseline_rss_mb,
                    "failures": [vars(o) for o in report.failures()],
                },
                indent=2,
            )
            + "\n"
        )
    sys.exit(1 if report.failures() else 0)


if __name__ == "__main__":
    main()
