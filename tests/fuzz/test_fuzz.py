"""CI-sized fuzz run: a few hundred mutated inputs per reader; nothing may escape as another exception,
hang, exhaust the memory limit or crash the worker. (The long mode is `benchmarks/fuzz.py`.)"""

from __future__ import annotations

import numpy as np

from fuzz.mutate import mutate_bytes, mutate_text
from fuzz.runner import _caused_by_memory, run_campaign
from topofr_cli.errors import TopofrError

CI_INPUTS = {
    "recordio": 150,
    "bin": 150,
    "packed": 100,
    "image": 200,
    "folder": 60,
    "recipe": 200,
    "checkpoint": 30,
    # issue 19's generators (fuzz/targets_hostile.py)
    "bin_dtype": 60,
    "bin_memo": 20,
    "image_modes": 100,
    "nonfinite_model": 10,
    "write_limit": 30,
    "landmarks": 60,
    "pairs_csv": 60,
}


def test_mutations_are_seeded_and_change_the_input():
    data = bytes(range(256)) * 4
    first = [mutate_bytes(data, np.random.default_rng([1, i])) for i in range(20)]
    again = [mutate_bytes(data, np.random.default_rng([1, i])) for i in range(20)]
    assert first == again
    assert sum(m != data for m in first) >= 18  # a truncation at the very end can leave it whole
    texts = [mutate_text("a: 1\nb: [x, y]\n", np.random.default_rng([2, i])) for i in range(20)]
    assert len(set(texts)) >= 10


def test_memory_errors_hidden_behind_a_project_error_are_still_counted():
    try:
        try:
            raise MemoryError
        except MemoryError:
            raise TopofrError("x: not a readable file") from None
    except TopofrError as exc:
        assert _caused_by_memory(exc)
    assert not _caused_by_memory(TopofrError("plain"))


def test_every_reader_survives_the_ci_campaign():
    report = run_campaign(CI_INPUTS, seed=20261130, timeout_s=30.0, memory_mb=1536)
    print(report.summary())
    assert len(report.outcomes) == sum(CI_INPUTS.values())
    for target in CI_INPUTS:  # the mutations must reach both outcomes, or the campaign tests little
        counts = report.counts(target)
        assert counts["project_error"] > 0, target
    problems = [f"{o.target}#{o.index} {o.kind}: {o.detail}" for o in report.failures()]
    assert problems == []
    assert report.peak_rss_mb < report.baseline_rss_mb + 1024
