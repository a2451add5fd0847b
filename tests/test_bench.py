"""`topofr bench --device cpu --quick --json`: every section runs, the checks pass, the JSON is whole."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from topofr_cli.bench import SECTION_BUDGETS_S, make_plan
from topofr_cli.bench.multigpu import image_gather_bytes, run_two_ranks
from topofr_cli.bench.plan import TOTAL_BUDGET_S
from topofr_cli.bench.runner import SECTIONS, section
from topofr_cli.bench.throughput import training_steps
from topofr_cli.cli.app import app
from topofr_cli.engine.distributed import DistContext

runner = CliRunner()
PIXELS = 3 * 112 * 112


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = runner.invoke(app, ["bench", "--device", "cpu", "--quick", "--json", "--out", str(out)])
    return result, out


def test_quick_cpu_bench_prints_one_json_object_with_every_section(quick_run):
    result, out = quick_run
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert report["quick"] and report["environment"]["device"] == "cpu"
    assert set(report) >= {"correctness", "throughput", "multi_gpu", "budgets_s", "plan", "elapsed_s"}
    assert report["budgets_s"] == SECTION_BUDGETS_S

    checks = {row["check"]: row for row in report["correctness"]["rows"]}
    assert report["correctness"]["status"] == "pass" and report["correctness"]["failed"] == []
    assert len(checks) == 9
    assert checks["step never syncs (CUDA detector)"]["ok"] is None  # n/a on the CPU, said so
    assert all(row["ok"] is True for name, row in checks.items() if "CUDA detector" not in name)
    assert "edges equal, deaths equal" in checks["h0_pairs, tie-heavy matrices"]["detail"]
    assert "runs as bf16 on the CPU" in checks["fp16 TopoFR step finite"]["detail"]

    steps = report["throughput"]["training_steps"]["rows"]
    assert [(r["network"], r["batch"], r["compile"], r["status"]) for r in steps] == [("mbf", 8, False, "ok")]
    row = steps[0]
    assert row["plain_img_s"] > 0 and row["topofr_img_s"] > 0
    assert report["plan"]["precision"] == "fp32" and row["precision"] == "fp32+channels-last"  # the CPU's
    assert 1 <= row["rounds"] <= 7  # interleaved rounds (fewer when the time cap stops a slow machine)
    low, high = row["topofr_over_plain_quartiles"]
    assert low <= row["topofr_over_plain"] <= high  # the median of the paired ratios, inside its quartiles
    assert row["plain_peak_gib"] is None  # no allocator statistics on the CPU
    parts = report["throughput"]["step_parts"]["rows"]
    assert [p["part"].split()[0] for p in parts] == ["PTSA", "RSP", "SDE"]
    assert all(p["status"] == "ok" and p["ms"] > 0 for p in parts)
    assert [(r["n"], r["status"]) for r in report["throughput"]["h0_pairs"]["rows"]] == [
        (128, "ok"),
        (512, "ok"),
    ]
    loader = report["throughput"]["data_loader"]["rows"]
    assert [r["workers"] for r in loader] == [0, 2] and all(r["img_s"] > 0 for r in loader)

    multi = report["multi_gpu"]
    assert multi["status"] == "skipped: 1 device"
    eight = next(r for r in multi["image_gather_bytes"] if r["world_size"] == 8)
    assert (
        eight["float32_bytes"] == 154_140_672 and eight["uint8_bytes"] == 38_535_168
    )  # 8·128·3·112·112 (·4)

    # not a terminal: a start line per section and a line per measurement, on stderr (stdout is the JSON)
    stamp = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")  # plain lines carry their local time
    progress = [stamp.sub("", line) for line in result.stderr.splitlines()]
    starts = [line for line in progress if line.startswith("bench ") and "(budget " in line]
    assert [line.split(": ", 1)[1].split(" (budget")[0] for line in starts] == [
        name for _, name, _ in SECTIONS
    ]
    assert any(line.startswith("  training steps: mbf B 8 eager: plain ") for line in progress), progress
    assert any(line.startswith("  correctness: GUM posterior: pass") for line in progress)

    assert json.loads((out / "bench.json").read_text()) == report
    text = (out / "bench.txt").read_text()
    for title in (
        "1. Correctness",
        "2a. Training step",
        "2b. Parts",
        "2c. h0 pairs",
        "2d. Train loader",
        "3. Multi-GPU: skipped: 1 device",
    ):
        assert title in text
    # no temporary left; the marker says topofr wrote the folder (what --overwrite may replace)
    assert sorted(p.name for p in out.iterdir()) == [".topofr-output", "bench.json", "bench.txt"]


def test_a_failed_check_exits_1_naming_it(quick_run, monkeypatch):
    report = json.loads(quick_run[0].stdout)
    broken = copy.deepcopy(report)
    broken["correctness"]["rows"][3]["ok"] = False
    broken["correctness"]["failed"] = [broken["correctness"]["rows"][3]["check"]]

    def replay(device, quick, on_section=None, **options):
        for key, _, _ in SECTIONS:
            on_section(key, section(broken, key))
        return broken

    monkeypatch.setattr("topofr_cli.bench.run_bench", replay)
    result = runner.invoke(app, ["bench", "--device", "cpu", "--quick"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "error: checks failed: GUM posterior"
    assert "FAIL" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_error_line():
    result = runner.invoke(app, ["bench", "--device", "cuda", "--quick", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "error: --device cuda: no CUDA device is available"


def test_the_full_plan_fits_eight_minutes_and_a_spent_budget_starts_nothing():
    assert sum(SECTION_BUDGETS_S.values()) <= TOTAL_BUDGET_S <= 8 * 60 - 30  # room for start-up, an overrun
    full = make_plan("cuda", quick=False, cpu_count=16)
    assert (full.network, full.classes, full.batches, full.compile_modes) == (
        "r50",
        85_742,
        (128, 256),
        (False, True),
    )
    assert full.h0_sizes == (128, 512, 1024)
    spent = make_plan("cpu", quick=True, cpu_count=2)
    spent.budgets_s["training steps"] = 0
    section = training_steps(spent, DistContext(0, 0, 1, torch.device("cpu"), None))
    assert [r["status"] for r in section["rows"]] == ["skipped: section budget 0 s spent"]


def test_image_gather_bytes_are_a_quarter_as_uint8():
    assert image_gather_bytes(64, 128) == {
        "world_size": 64,
        "batch_per_rank": 128,
        "float32_bytes": 64 * 128 * PIXELS * 4,
        "uint8_bytes": 64 * 128 * PIXELS,
    }


@pytest.mark.slow
def test_two_gloo_ranks_run_the_multi_gpu_section_code():
    """The code the multi-GPU section runs over NCCL, run over gloo: equality and measured bytes."""
    result = run_two_ranks("cpu", "mbf", 10, 2, 1, warmup=0)
    assert result["two_ranks_equal_one_process"], result["worst_relative_delta"]
    measured = result["measured_image_gather_bytes"]
    assert measured["bytes"] == 2 * 4 * PIXELS and measured["float32_would_be"] == 4 * measured["bytes"]
    assert (
        result["throughput"]["plain_img_s_per_gpu"] > 0 and result["throughput"]["topofr_img_s_per_gpu"] > 0
    )


def test_help_states_each_section_budget_and_the_root_help_lists_bench():
    result = runner.invoke(app, ["bench", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name, seconds in SECTION_BUDGETS_S.items():
        assert f"{name} {seconds} s" in text
    assert "bench" in runner.invoke(app, ["--help"]).output


def test_an_unknown_device_name_is_one_error_line():
    result = runner.invoke(app, ["bench", "--device", "gpu"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --device gpu: expected auto, cpu, cuda or cuda:N"
