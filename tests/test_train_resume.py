"""Interrupt-then-resume on CPU with `deterministic: true` ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import torch

from topofr_cli.artifacts.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints
from topofr_cli.artifacts.run_dir import read_metrics
from topofr_cli.config import load_recipe
from topofr_cli.engine.trainer import train


def _assert_trees_equal(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_trees_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_trees_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_same_state(a: Checkpoint, b: Checkpoint) -> None:
    for key in ("backbone", "classifier", "objective", "step", "epoch"):
        _assert_trees_equal(getattr(a, key), getattr(b, key), key)
    for key in ("backbone_optimizer", "classifier_optimizer", "hooks", "rng"):
        _assert_trees_equal(a.training[key], b.training[key], key)


def test_resumed_run_is_bit_identical(make_tiny_dataset, tiny_recipe_file, tmp_path):
    torch.set_num_threads(1)
    # 24 images in batches of 8: 3 steps per epoch; stop at step 2 (mid-epoch), finish at 5 (next epoch).
    data = make_tiny_dataset(tmp_path / "data", classes=4, per_class=6, pairs=0)
    # TopoFR on: RSP draws, the SDE weights and the learned latent scale λ must all resume exactly too
    topofr = ["topofr.enabled=true", "topofr.rsp.prob=0.5"]
    straight = tiny_recipe_file(tmp_path, data, tmp_path / "straight")
    full = train(load_recipe(straight, ["schedule.max_steps=5", *topofr]))
    assert full.steps == 5 and full.epochs_completed == 1

    split = tiny_recipe_file(tmp_path, data, tmp_path / "split")
    first = train(load_recipe(split, ["schedule.max_steps=2", *topofr]))
    assert first.steps == 2 and latest_checkpoint(tmp_path / "split").name == "step_00000002.pt"
    second = train(load_recipe(split, ["schedule.max_steps=5", *topofr]), resume=True)
    assert second.steps == 5

    a = Checkpoint.read(latest_checkpoint(tmp_path / "straight"))
    b = Checkpoint.read(latest_checkpoint(tmp_path / "split"))
    _assert_same_state(a, b)
    assert a.step == b.step == 5
    # the weights moved (an equal-but-untrained pair would prove nothing)
    initial = Checkpoint.read(list_checkpoints(tmp_path / "split")[0][1])
    assert initial.step == 0 and not torch.equal(a.classifier, initial.classifier)

    # a fresh run saves the initial model (0); save_every 3 and the epoch end (step 3) coincide; the
    # interrupted run adds its stop checkpoint (2)
    assert [s for s, _ in list_checkpoints(tmp_path / "straight")] == [0, 3, 5]
    assert [s for s, _ in list_checkpoints(tmp_path / "split")] == [0, 2, 3, 5]
    # one metrics row per step in both, identical losses
    rows_a, rows_b = (
        read_metrics(tmp_path / "straight/metrics.csv"),
        read_metrics(tmp_path / "split/metrics.csv"),
    )
    assert [r["step"] for r in rows_b] == ["1", "2", "3", "4", "5"]
    for column in ("loss", "loss_topo", "latent_scale", "gum_pi"):
        assert [r[column] for r in rows_a] == [r[column] for r in rows_b], column
    assert a.latent_scale != 1.0


def test_resume_from_the_initial_checkpoint_is_bit_identical(make_tiny_dataset, tiny_recipe_file, tmp_path):
    """A run killed before its first step resumes from step_00000000.pt, the initial model."""
    torch.set_num_threads(1)
    data = make_tiny_dataset(tmp_path / "data", classes=4, per_class=6, pairs=0)
    overrides = ["schedule.max_steps=4", "topofr.enabled=true", "topofr.rsp.prob=0.5"]
    straight = tiny_recipe_file(tmp_path, data, tmp_path / "straight")
    train(load_recipe(straight, overrides))
    killed = tiny_recipe_file(tmp_path, data, tmp_path / "killed")
    train(load_recipe(killed, overrides))
    for _step, path in list_checkpoints(tmp_path / "killed")[1:]:  # as if killed right after the start
        path.unlink()
    assert [s for s, _ in list_checkpoints(tmp_path / "killed")] == [0]
    resumed = train(load_recipe(killed, overrides), resume=True)
    assert resumed.steps == 4
    _assert_same_state(
        Checkpoint.read(latest_checkpoint(tmp_path / "straight")),
        Checkpoint.read(latest_checkpoint(tmp_path / "killed")),
    )
    rows = read_metrics(tmp_path / "killed/metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]  # the killed run's rows were replaced
    assert [r["loss"] for r in rows] == [r["loss"] for r in read_metrics(tmp_path / "straight/metrics.csv")]
