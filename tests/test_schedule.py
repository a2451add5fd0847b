"""The learning-rate schedule: warm-up then polynomial decay, checked against hand-computed values."""

import pytest
import torch

from topofr_cli.engine.schedule import PolySchedule


def test_poly_decay_without_warmup_matches_hand_values():
    s = PolySchedule(base_lr=0.1, total_steps=10, warmup_steps=0, power=2.0)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.1 * 0.5**2)  # 0.025
    assert s.lr_at(9) == pytest.approx(0.1 * 0.1**2)  # 0.001
    assert s.lr_at(10) == 0.0
    assert s.lr_at(25) == 0.0  # past the end it stays at zero


def test_warmup_is_linear_and_reaches_base_lr():
    s = PolySchedule(base_lr=0.2, total_steps=14, warmup_steps=4, power=1.0)
    assert [s.lr_at(i) for i in range(4)] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert s.lr_at(4) == pytest.approx(0.2)
    assert s.lr_at(9) == pytest.approx(0.2 * (1 - 5 / 10))  # halfway through the decay, power 1
    assert s.lr_at(14) == 0.0


def test_schedule_is_monotone_after_warmup():
    s = PolySchedule(base_lr=1.0, total_steps=100, warmup_steps=10, power=2.0)
    values = [s.lr_at(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_apply_sets_every_param_group():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=123.0)
    s = PolySchedule(base_lr=0.1, total_steps=4, power=2.0)
    assert s.apply(opt, 2) == pytest.approx(0.025)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.025])


def test_invalid_schedules_are_rejected():
    with pytest.raises(ValueError):
        PolySchedule(0.1, total_steps=0)
    with pytest.raises(ValueError):
        PolySchedule(0.1, total_steps=5, warmup_steps=6)
