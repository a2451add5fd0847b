"""`--json` on eval, analyze-topology and hard-samples: stdout is exactly one JSON object, with the same
numbers as the files the command wrote; tables, bars and notes go to stderr."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.cli.json_output import plain

runner = CliRunner()


@pytest.fixture(scope="module")
def run(make_tiny_dataset, tiny_recipe_file, tmp_path_factory):
    """A two-step training run on a tiny packed set with a verification .bin."""
    root = tmp_path_factory.mktemp("json")
    data = make_tiny_dataset(root / "data", classes=4, per_class=4, pairs=20)
    recipe = tiny_recipe_file(root, data, root / "run")
    result = runner.invoke(app, ["train", str(recipe), "--set", "schedule.max_steps=2"])
    assert result.exit_code == 0, result.output
    checkpoint = sorted((root / "run" / "checkpoints").glob("*.pt"))[-1]  # the last: step 2
    return {"root": root, "data": data, "checkpoint": checkpoint}


def _one_object(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


def test_eval_json(run, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["eval", str(run["checkpoint"]), "--json", "--device", "cpu", "--workers", "0", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    shown = _one_object(result.stdout)
    assert "verification" in result.stderr and "accuracy" in result.stderr  # the table, on stderr
    assert shown["model"] == str(run["checkpoint"]) and shown["network"] == "mbf" and shown["step"] == 2
    (row,) = list(csv.DictReader(open(out / "verification.csv")))
    sets = shown["verification"]["sets"]
    assert list(sets) == [row["set"]] == ["val"]
    assert sets["val"]["pairs"] == int(row["pairs"]) == 20
    assert sets["val"]["accuracy"] == pytest.approx(float(row["accuracy"]), rel=1e-5)
    assert Path(shown["verification"]["csv"]) == out / "verification.csv"


def test_hard_samples_json(run, tmp_path):
    out = tmp_path / "hard"
    result = runner.invoke(
        app,
        [
            "hard-samples",
            str(run["checkpoint"]),
            "--data",
            str(run["data"]),
            "--json",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--top",
            "5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = _one_object(result.stdout)
    on_disk = json.loads((out / "summary.json").read_text())
    for key, value in on_disk.items():
        assert shown[key] == value, key
    assert shown["num_images"] == 16
    assert [row["rank"] for row in shown["top"]] == [1, 2, 3, 4, 5]
    scores = [row["sds"] for row in shown["top"]]
    assert scores == sorted(scores, reverse=True)
    with open(out / "sds.csv") as handle:
        best = max(csv.DictReader(handle), key=lambda row: float(row["sds"]))
    assert shown["top"][0]["index"] == int(best["index"])


def test_analyze_topology_json(run, tmp_path):
    out = tmp_path / "topology"
    result = runner.invoke(
        app,
        [
            "analyze-topology",
            str(run["checkpoint"]),
            "--data",
            str(run["data"]),
            "--json",
            "--samples",
            "12",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = _one_object(result.stdout)
    on_disk = json.loads((out / "summary.json").read_text())
    assert shown == {**on_disk, "out": str(out)}


def test_without_json_stdout_is_for_people(run, tmp_path):
    result = runner.invoke(
        app,
        [
            "analyze-topology",
            "--no-model",
            "--data",
            str(run["data"]),
            "--samples",
            "12",
            "--out",
            str(tmp_path / "t"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "input space" in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_an_error_under_json_leaves_stdout_empty(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "missing.pt"), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "missing.pt" in result.stderr


def test_plain_turns_numbers_paths_and_nan_into_json():
    import numpy as np

    value = {"a": np.float32(0.5), "b": np.arange(3), "c": Path("x/y"), "d": float("nan"), 1: (np.int64(2),)}
    assert plain(value) == {"a": 0.5, "b": [0, 1, 2], "c": "x/y", "d": None, "1": [2]}
