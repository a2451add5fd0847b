"""Run a benchmark and keep what it printed, with where and from what it was measured.

    python benchmarks/record.py benchmarks/results/compat_effects.log -- python benchmarks/compat_effects.py

Writes LOG: a header (`# command`, commit, CPU model, cores, torch, Python, date, wall seconds, exit
status), then the command's stdout and stderr as they came. The docs cite such logs for numbers that
a benchmark prints rather than writes to a JSON file; re-running the same line regenerates them. The
log is written only once the command has finished (atomically), so an interrupted run leaves the
committed one in place.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="where the log goes (e.g. benchmarks/results/NAME.log)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme_numbers import machine

    where = machine()  # before the run: the commit the command ran on
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds = time.perf_counter() - started
    sys.stdout.write(done.stdout)
    header = [f"# command: {shlex.join(command)}"]
    header += [f"# {key}: {value}" for key, value in where.items()]
    header += [f"# threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"]
    header += [f"# wall seconds: {seconds:.0f}", f"# exit status: {done.returncode}"]
    args.log.parent.mkdir(parents=True, exist_ok=True)
    staging = args.log.with_name(args.log.name + ".partial")
    staging.write_text("\n".join(header) + "\n" + done.stdout)
    staging.replace(args.log)
    print(f"wrote {args.log} ({seconds:.0f} s, exit {done.returncode})")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
