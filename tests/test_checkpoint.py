"""Checkpoint files: atomic writes, weights_only loading, RNG round trips, compatibility checks."""

import random

import numpy as np
import pytest
import torch

from topofr_cli.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    check_same_model,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from topofr_cli.errors import TopofrError


def payload(step: int = 1) -> dict:
    return {"format": CHECKPOINT_FORMAT, "step": step, "model": {"network": "mbf", "embedding_size": 8,
                                                              "num_classes": 3},
            "backbone": {"w": torch.arange(6.0).reshape(2, 3)}, "training": {"rng": [capture_rng_state()]}}


def test_save_then_load_with_weights_only(tmp_path):
    path = save_checkpoint(payload(7), checkpoint_path(tmp_path, 7))
    assert path.name == "step_00000007.pt"
    loaded = torch.load(path, weights_only=True)  # the contract: loadable without arbitrary unpickling
    assert loaded["step"] == 7 and torch.equal(loaded["backbone"]["w"], torch.arange(6.0).reshape(2, 3))
    assert load_checkpoint(path)["format"] == CHECKPOINT_FORMAT


def test_failed_save_leaves_previous_file_and_no_temp(tmp_path):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(payload(1), path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled: torch.save fails midway
        save_checkpoint({"format": CHECKPOINT_FORMAT, "bad": lambda: 0}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_latest_checkpoint_orders_by_step_not_name(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (9, 10, 100000000):
        save_checkpoint(payload(step), checkpoint_path(tmp_path, step))
    (tmp_path / "checkpoints" / "step_x.pt").write_text("ignored")
    assert latest_checkpoint(tmp_path).name == "step_100000000.pt"


def test_bad_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TopofrError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(TopofrError, match="other.pt: not a topofr checkpoint"):
        load_checkpoint(other)
    with pytest.raises(TopofrError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_check_same_model_names_the_differing_key(tmp_path):
    ok = payload()
    check_same_model(ok, "c.pt", network="mbf", embedding_size=8, num_classes=3)
    with pytest.raises(TopofrError, match=r"c.pt: checkpoint key 'model.network' is 'mbf' but the recipe asks "
                                          r"for 'r50'"):
        check_same_model(ok, "c.pt", network="r50", embedding_size=8, num_classes=3)
    with pytest.raises(TopofrError, match="model.num_classes"):
        check_same_model(ok, "c.pt", network="mbf", embedding_size=8, num_classes=4)
    weights_only = {k: v for k, v in ok.items() if k != "training"}
    with pytest.raises(TopofrError, match="cannot resume"):
        check_same_model(weights_only, "c.pt", network="mbf", embedding_size=8, num_classes=3)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = capture_rng_state()
    expected = (torch.rand(4), np.random.rand(3), np.random.normal(), random.random())
    save_checkpoint({"format": CHECKPOINT_FORMAT, "rng": state}, tmp_path / "rng.pt")
    for _ in range(5):  # move every generator on
        torch.rand(10), np.random.rand(10), random.random()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(4), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]
