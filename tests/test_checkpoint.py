"""Checkpoint files: atomic writes, weights_only loading, version-1 files, RNG round trips, resume checks."""

import math
import random

import numpy as np
import pytest
import torch

from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_FORMAT,
    LATENT_LOG_SCALE_KEY,
    Checkpoint,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_weights_file,
)
from topofr_cli.config import Recipe
from topofr_cli.engine.rng import capture_rng_state, restore_rng_state
from topofr_cli.errors import TopofrError


def checkpoint(step: int = 1, **changes) -> Checkpoint:
    fields = {
        "network": "mbf",
        "embedding_size": 8,
        "num_classes": 3,
        "backbone": {"w": torch.arange(6.0).reshape(2, 3)},
        "classifier": torch.ones(3, 8),
        "step": step,
        "epoch": 0,
        "training": {"rng": [capture_rng_state()]},
    }
    return Checkpoint(**{**fields, **changes})


def test_write_then_read_with_weights_only(tmp_path):
    recipe = Recipe()
    recipe.head.m2 = 0.3
    path = checkpoint(7, recipe=recipe).write(checkpoint_path(tmp_path, 7))
    assert path.name == "step_00000007.pt"
    raw = torch.load(path, weights_only=True)  # the contract: loadable without arbitrary unpickling
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 2
    assert raw["step"] == 7 and torch.equal(raw["backbone"]["w"], torch.arange(6.0).reshape(2, 3))
    assert "latent_scale" not in raw  # λ lives once, in the objective state
    read = Checkpoint.read(path)
    assert read.recipe == recipe and read.recipe.head.m2 == 0.3  # parsed into the typed recipe once
    assert read.step == 7 and read.path == path and torch.equal(read.classifier, torch.ones(3, 8))


def test_latent_scale_is_derived_from_the_objective_state(tmp_path):
    log_scale = torch.tensor(0.75)
    path = checkpoint(objective={LATENT_LOG_SCALE_KEY: log_scale}).write(tmp_path / "c.pt")
    assert Checkpoint.read(path).latent_scale == float(log_scale.exp())
    assert Checkpoint.read(checkpoint().write(tmp_path / "plain.pt")).latent_scale is None


def test_version_1_files_are_read_into_the_same_object(tmp_path):
    """The layout written before version 2: λ twice, the loop counters flat in `training`."""
    v1 = {
        "format": CHECKPOINT_FORMAT,
        "topofr_version": "0.1.0",
        "model": {"network": "mbf", "embedding_size": 8, "num_classes": 3},
        "recipe": Recipe().to_dict(),
        "step": 4,
        "epoch": 1,
        "backbone": {},
        "classifier": torch.zeros(3, 8),
        "latent_scale": 1.5,
        "training": {
            "position": {"epoch": 1, "batch_in_epoch": 1},
            "bad_steps": 2,
            "consecutive_bad": 1,
            "objective": {LATENT_LOG_SCALE_KEY: torch.tensor(math.log(1.5))},
            "rng": [],
        },
    }
    torch.save(v1, tmp_path / "v1.pt")
    read = Checkpoint.read(tmp_path / "v1.pt")
    assert read.latent_scale == 1.5 and set(read.objective) == {LATENT_LOG_SCALE_KEY}
    assert read.hook_state("loop") == {"step": 4, "epoch": 1, "batch_in_epoch": 1}
    assert read.hook_state("metrics") == {"bad_steps": 2}
    assert read.hook_state("stopping") == {"consecutive_bad": 1}
    assert "objective" not in read.training and "position" not in read.training


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    checkpoint(1).write(path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled: torch.save fails midway
        checkpoint(1, training={"bad": lambda: 0}).write(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_listing_orders_by_step_not_name(tmp_path):
    assert latest_checkpoint(tmp_path) is None and list_checkpoints(tmp_path) == []
    for step in (9, 10, 100000000, 0):
        checkpoint(step).write(checkpoint_path(tmp_path, step))
    (tmp_path / "checkpoints" / "step_x.pt").write_text("ignored")
    (tmp_path / "checkpoints" / "step_1.pt").write_text("ignored: not our 8-digit name")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [0, 9, 10, 100000000]
    assert latest_checkpoint(tmp_path).name == "step_100000000.pt"


def test_bad_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TopofrError, match="junk.pt: not a readable checkpoint"):
        Checkpoint.read(junk)
    with pytest.raises(TopofrError, match="junk.pt: refused or unreadable with torch.load"):
        load_weights_file(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(TopofrError, match="other.pt: not a topofr checkpoint"):
        Checkpoint.read(other)
    with pytest.raises(TopofrError, match="checkpoint not found"):
        Checkpoint.read(tmp_path / "missing.pt")


def test_check_resumable_names_the_differing_key(tmp_path):
    ok = Checkpoint.read(checkpoint().write(tmp_path / "c.pt"))
    ok.check_resumable(network="mbf", embedding_size=8, num_classes=3)
    with pytest.raises(
        TopofrError,
        match=r"c.pt: checkpoint key 'model.network' is 'mbf' but the recipe asks "
        r"for 'r50'",
    ):
        ok.check_resumable(network="r50", embedding_size=8, num_classes=3)
    with pytest.raises(TopofrError, match="model.num_classes"):
        ok.check_resumable(network="mbf", embedding_size=8, num_classes=4)
    weights_only = Checkpoint.read(checkpoint(training=None).write(tmp_path / "w.pt"))
    with pytest.raises(TopofrError, match="cannot resume"):
        weights_only.check_resumable(network="mbf", embedding_size=8, num_classes=3)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = capture_rng_state()
    expected = (torch.rand(4), np.random.rand(3), np.random.normal(), random.random())
    checkpoint(training={"rng": [state]}).write(tmp_path / "rng.pt")
    for _ in range(5):  # move every generator on
        torch.rand(10), np.random.rand(10), random.random()
    restore_rng_state(Checkpoint.read(tmp_path / "rng.pt").training["rng"][0])
    again = (torch.rand(4), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]
