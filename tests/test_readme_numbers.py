"""The README's measured numbers are the last committed output of `benchmarks/readme_numbers.py`."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("readme_numbers", ROOT / "benchmarks" / "readme_numbers.py")
readme_numbers = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(readme_numbers)

BLOCKS = {
    m[1]: m[2] for m in readme_numbers.MARKER.finditer((ROOT / "README.md").read_text(encoding="utf-8"))
}


def test_the_readme_marks_every_section_the_script_measures():
    assert set(BLOCKS) == set(readme_numbers.SECTIONS)


@pytest.mark.parametrize("name", sorted(readme_numbers.SECTIONS))
def test_readme_block_is_the_committed_measurement(name):
    numbers = (
        json.loads(readme_numbers.DEFAULT_JSON.read_text()) if readme_numbers.DEFAULT_JSON.exists() else {}
    )
    assert name in numbers, (
        f"not measured: run python benchmarks/readme_numbers.py --sections {name} --write-readme"
    )
    assert not numbers[name]["quick"], "a --quick smoke run is not a README number"
    assert BLOCKS[name] == readme_numbers.render(name, numbers[name])


def test_render_states_spread_range_and_machine():
    """On a made-up measurement the main job's sentence carries mean ± std, the range and the machine."""
    run = {"seed": 0, "accuracy": 0.8, "seconds": 100.0, "pixel_baseline": 0.6}
    spread = readme_numbers._spread([run, {**run, "seed": 1, "accuracy": 0.9, "seconds": 80.0}])
    assert (spread["mean"], spread["std"], spread["min"], spread["max"]) == (85.0, 7.07, 80.0, 90.0)
    data = {"quickstart": spread, "quickstart_topofr": spread, "machine": {"cores": 2, "cpu": "X"}}
    text = readme_numbers.render("main_job", data)
    assert "85.00 % ± 7.07 over seeds 0–1 (range 80.00–90.00 %) against 60.00 % for raw pixels" in text
    assert "1 min 40 s wall for the first run" in text and "on 2 cores, X" in text


def test_render_bench_states_the_quartiles_and_the_threads():
    """The CPU bench is noisy on a shared machine: the README line carries the quartiles, not the median alone."""
    step = {"network": "mbf", "classes": 1000, "batch": 8, "topofr_over_plain": 0.981}
    data = {
        "command": "topofr bench --device cpu --quick --json",
        "checks": {"pass": 7, "fail": 0, "not_applicable": 2},
        "step": {**step, "topofr_over_plain_quartiles": [0.95, 1.024]},
        "h0_ms": {"128": 9.23, "512": None},
        "torch_threads": 1,
        "machine": {"cores": 2, "cpu": "X"},
    }
    text = readme_numbers.render("bench", data)
    assert "every correctness check passes (2 of 9 not applicable on a CPU)" in text
    assert "0.98× a plain one (quartiles 0.95–1.02; mbf, 1,000 classes, B = 8)" in text
    assert "h0 pairs take 9.2 ms at n = 128 (medians)" in text and "2 cores, X, 1 torch thread(s)" in text
