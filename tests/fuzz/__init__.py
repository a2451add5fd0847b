"""An in-process fuzzer for every reader of user files (see runner.py; long mode: benchmarks/fuzz.py)."""
