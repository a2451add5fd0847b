"""`topofr train --init`: mismatches are one line with nothing written; kill -9 then --resume is bit-exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_run_folder_safety import _wait_for
from test_train_resume import _assert_same_state
from typer.testing import CliRunner

from topofr_cli.artifacts.checkpoint import Checkpoint, latest_checkpoint
from topofr_cli.cli.app import app
from topofr_cli.models import create_backbone

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(make_tiny_dataset, tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("d") / "data", classes=3, per_class=6, pairs=0)


@pytest.fixture(scope="module")
def mbf32(tmp_path_factory) -> Path:
    """An insightface-style mbf backbone file matching the tiny recipe (mbf, 32-d)."""
    path = tmp_path_factory.mktemp("m") / "mbf32.pth"
    torch.manual_seed(0)
    torch.save(create_backbone("mbf", 32).state_dict(), path)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, result.output.strip()


def _one_line_nothing_written(code: int, out: str, run: Path) -> str:
    assert code == 2 and len(out.splitlines()) == 1, out
    assert not run.exists(), "a refused start must leave no run folder"
    return " ".join(out.split())


def test_init_is_shorthand_for_the_recipe_key(tiny_recipe_file, data, tmp_path):
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run")
    code, out = invoke(str(recipe), "--init", "true", "--print-config")  # a YAML-looking path stays a string
    assert code == 0 and "init: 'true'" in out


def test_network_mismatch_says_which_set_fixes_it(tiny_recipe_file, data, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("r18", 32).state_dict(), path)
    run = tmp_path / "run"
    out = _one_line_nothing_written(
        *invoke(str(tiny_recipe_file(tmp_path, data, run)), "--init", str(path)), run
    )
    assert str(path) in out and "r18 backbone" in out and "model.network is mbf" in out
    assert "--set model.network=r18" in out


def test_embedding_size_mismatch_says_which_set_fixes_it(tiny_recipe_file, data, tmp_path):
    path = tmp_path / "mbf64.pth"
    torch.save(create_backbone("mbf", 64).state_dict(), path)
    run = tmp_path / "run"
    out = _one_line_nothing_written(
        *invoke(str(tiny_recipe_file(tmp_path, data, run)), "--init", str(path)), run
    )
    assert "64-d embeddings" in out and "--set model.embedding_size=64" in out


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ({"weight": torch.randn(5, 32)}, "holds no backbone"),  # a classifier alone
        ({"state": {}, "param_groups": []}, "holds no backbone"),  # an optimizer's state
        ({"format": "topofr-checkpoint", "model": {"network": "mbf"}, "backbone": None}, "holds no backbone"),
        ([torch.zeros(3)], "not backbone weights"),
    ],
)
def test_a_file_without_a_backbone_is_one_line(content, says, tiny_recipe_file, data, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    run = tmp_path / "run"
    out = _one_line_nothing_written(
        *invoke(str(tiny_recipe_file(tmp_path, data, run)), "--init", str(path)), run
    )
    assert str(path) in out and says in out


def test_missing_onnx_and_digest_mismatch(tiny_recipe_file, data, mbf32, tmp_path):
    run = tmp_path / "run"
    recipe = str(tiny_recipe_file(tmp_path, data, run))
    out = _one_line_nothing_written(*invoke(recipe, "--init", str(tmp_path / "nope.pt")), run)
    assert "nope.pt: train.init (--init) model file not found" in out
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\0")
    assert "ONNX model holds no trainable weights" in _one_line_nothing_written(
        *invoke(recipe, "--init", str(onnx)), run
    )
    wrong = "ab" * 32
    out = _one_line_nothing_written(
        *invoke(recipe, "--init", str(mbf32), "--set", f"train.init_sha256={wrong}"), run
    )
    assert "differs from the recipe's train.init_sha256" in out


def test_keep_objective_needs_a_topofr_checkpoint(tiny_recipe_file, data, mbf32, tmp_path):
    run = tmp_path / "run"
    recipe = str(tiny_recipe_file(tmp_path, data, run))
    out = _one_line_nothing_written(
        *invoke(recipe, "--init", str(mbf32), "--set", "train.init_keep_objective=true"), run
    )
    assert "needs a topofr checkpoint of a TopoFR run" in out and "insightface" in out
    out = _one_line_nothing_written(*invoke(recipe, "--set", "train.init_keep_objective=true"), run)
    assert "train.init names no model file" in out


def test_init_with_resume_and_no_checkpoint_is_refused(tiny_recipe_file, data, mbf32, tmp_path):
    run = tmp_path / "run"
    recipe = str(tiny_recipe_file(tmp_path, data, run))
    out = _one_line_nothing_written(*invoke(recipe, "--init", str(mbf32), "--resume"), run)
    assert (
        "holds no checkpoint to resume" in out and "--resume wins only over a run that has checkpoints" in out
    )


def _train_argv(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "topofr_cli", "train", str(recipe), *extra]


def test_kill_9_during_a_fine_tune_then_resume_is_bit_exact(tiny_recipe_file, data, mbf32, tmp_path):
    # 18 images in batches of 8: 2 steps an epoch, 3 epochs; the first step frozen, backbone lr × 0.5
    steps = ["--set", "schedule.epochs=3", "--set", "train.save_every=1"]
    steps += ["--set", "train.freeze_backbone_steps=1", "--set", "optim.backbone_lr_multiplier=0.5"]
    (tmp_path / "a").mkdir()
    straight = tiny_recipe_file(tmp_path / "a", data, tmp_path / "straight")
    assert runner.invoke(app, ["train", str(straight), "--init", str(mbf32), *steps]).exit_code == 0

    (tmp_path / "b").mkdir()
    recipe = tiny_recipe_file(tmp_path / "b", data, tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        _train_argv(recipe, "--init", str(mbf32), *steps),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(
            lambda: (tmp_path / "run/checkpoints/step_00000002.pt").exists(), first, 900.0
        )  # shared CPUs
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = latest_checkpoint(tmp_path / "run")
    assert int(killed_at.stem.split("_")[1]) < 6

    code, out = invoke(
        str(recipe), "--init", str(mbf32), *steps, "--resume"
    )  # --init given again: resume wins
    assert code == 0, out
    assert "--resume wins over --init once a run has checkpoints" in " ".join(out.split())
    resumed = Checkpoint.read(latest_checkpoint(tmp_path / "run"))
    expected = Checkpoint.read(latest_checkpoint(tmp_path / "straight"))
    assert resumed.step == 6
    _assert_same_state(expected, resumed)
    assert resumed.recipe.train.init_sha256 == expected.recipe.train.init_sha256 is not None
