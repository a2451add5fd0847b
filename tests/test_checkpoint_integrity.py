"""Checkpoint integrity: a checksum of the content, verified on load; --resume falls back past damage;
non-finite weights are never written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_train_resume import _assert_same_state
from typer.testing import CliRunner

from topofr_cli.artifacts.checkpoint import Checkpoint, list_checkpoints
from topofr_cli.artifacts.digest import content_digest
from topofr_cli.cli.app import app
from topofr_cli.engine.rng import capture_rng_state
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.model_io import load_model

runner = CliRunner()


def checkpoint(**changes) -> Checkpoint:
    fields = {
        "network": "mbf",
        "embedding_size": 8,
        "num_classes": 3,
        "backbone": {"w": torch.linspace(-1, 1, 64).reshape(8, 8)},
        "classifier": torch.full((3, 8), 0.25),
        "step": 1,
        "epoch": 0,
        "training": {"rng": [capture_rng_state()], "world_size": 1},
    }
    return Checkpoint(**{**fields, **changes})


def flip_bit_in(path: Path, tensor: torch.Tensor, bit: int = 3) -> None:
    """Flip one bit inside the stored bytes of `tensor` (found by its exact content in the file)."""
    data = bytearray(path.read_bytes())
    where = data.find(tensor.numpy().tobytes())
    assert where > 0
    data[where + tensor.numel() * tensor.element_size() // 2] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_the_digest_covers_values_types_and_every_tensor_byte():
    base = {"a": torch.zeros(4), "b": [1, 2.0, True, None, "x"]}
    digest = content_digest(base)
    assert digest == content_digest({"a": torch.zeros(4), "b": [1, 2.0, True, None, "x"]})
    changed = [
        {"a": torch.zeros(4, dtype=torch.float64), "b": base["b"]},  # dtype
        {"a": torch.zeros(2, 2), "b": base["b"]},  # shape
        {"a": torch.tensor([0.0, 0.0, -0.0, 0.0]), "b": base["b"]},  # one sign bit
        {"a": torch.zeros(4), "b": [1.0, 2.0, True, None, "x"]},  # 1 against 1.0
        {"a": torch.zeros(4), "b": [1, 2.0, 1, None, "x"]},  # True against 1
        {"c": torch.zeros(4), "b": base["b"]},
    ]  # a key
    assert all(content_digest(other) != digest for other in changed)


def test_a_flipped_bit_in_tensor_data_is_an_error_naming_the_file(tmp_path):
    path = checkpoint().write(tmp_path / "step_00000001.pt")
    assert Checkpoint.read(path).step == 1
    flip_bit_in(path, torch.linspace(-1, 1, 64).reshape(8, 8))
    assert torch.load(path, weights_only=True)["step"] == 1  # torch itself loads it without complaint
    with pytest.raises(TopofrError) as caught:
        Checkpoint.read(path)
    assert str(caught.value) == (
        f"{path}: damaged checkpoint (its content does not match the sha256 checksum stored in it)"
    )
    with pytest.raises(TopofrError, match="damaged checkpoint"):
        load_model(path)  # eval/export read checkpoints through the same check


def test_checkpoints_written_before_checksums_still_load(tmp_path):
    legacy = checkpoint().to_payload()
    assert "checksum" not in legacy
    torch.save(legacy, tmp_path / "old.pt")
    assert torch.equal(Checkpoint.read(tmp_path / "old.pt").classifier, torch.full((3, 8), 0.25))


def test_a_malformed_checksum_entry_is_damage(tmp_path):
    payload = checkpoint().to_payload()
    payload["checksum"] = {"algorithm": "sha256", "digest": 5}
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(TopofrError, match=r"c\.pt: damaged checkpoint \(its 'checksum' entry is malformed\)"):
        Checkpoint.read(tmp_path / "c.pt")


@pytest.mark.parametrize("where", ["backbone", "classifier"])
def test_non_finite_weights_are_never_written(tmp_path, where):
    bad = {
        "backbone": {"backbone": {"w": torch.tensor([1.0, float("nan")])}},
        "classifier": {"classifier": torch.tensor([[float("inf")]])},
    }[where]
    target = tmp_path / "step_00000005.pt"
    with pytest.raises(TopofrError) as caught:
        checkpoint(step=5, **bad).write(target)
    name = "backbone.w" if where == "backbone" else "classifier"
    assert str(caught.value).startswith(f"{target}: not written: '{name}' holds non-finite values at step 5")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary


# -- --resume over damaged checkpoints (CLI) -------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(make_tiny_dataset, tiny_recipe_file, tmp_path_factory):
    """A 4-step run with a checkpoint after every step, and copies of its files."""
    root = tmp_path_factory.mktemp("run")
    data = make_tiny_dataset(root / "data", classes=4, per_class=4, pairs=0)
    recipe = tiny_recipe_file(root, data, root / "run", "")
    result = runner.invoke(app, ["train", str(recipe), "--set", "train.save_every=1"])
    assert result.exit_code == 0, result.output
    assert [s for s, _ in list_checkpoints(root / "run")] == [0, 1, 2, 3, 4]
    shutil.copytree(root / "run", root / "pristine")
    return root, recipe


def _fresh_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    root, recipe = finished_run
    run = root / "run"
    shutil.rmtree(run)
    shutil.copytree(root / "pristine", run)
    return run, recipe


def test_resume_with_a_truncated_latest_checkpoint_continues_from_the_previous_one(finished_run, tmp_path):
    run, recipe = _fresh_copy(finished_run, tmp_path)
    latest = run / "checkpoints/step_00000004.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    result = runner.invoke(app, ["train", str(recipe), "--set", "train.save_every=1", "--resume"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "note:" in line]
    assert len(notes) == 1 and str(latest) in " ".join(result.output.split())
    assert "resuming from an earlier checkpoint" in " ".join(result.output.split())
    # step 3 → 4 again: the same step 4 as the uninterrupted run, bit for bit
    _assert_same_state(
        Checkpoint.read(finished_run[0] / "pristine/checkpoints/step_00000004.pt"), Checkpoint.read(latest)
    )


def test_resume_with_every_checkpoint_damaged_stops_with_one_line(finished_run, tmp_path):
    run, recipe = _fresh_copy(finished_run, tmp_path)
    for _step, path in list_checkpoints(run):
        stored = Checkpoint.read(path).classifier
        flip_bit_in(path, stored)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["train", str(recipe), "--resume"])
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert out.startswith(f"error: {run}: --resume found no intact checkpoint: all 5 are damaged")
    assert "step_00000004.pt: damaged checkpoint" in out
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
