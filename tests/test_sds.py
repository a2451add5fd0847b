"""SDE statistic, sample weights (fixed vs reference compat), SDS and the weighted loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.hardness import (
    gum_posterior,
    sample_weights,
    sde_statistic,
    sde_weights,
    structure_damage_score,
    weighted_classification_loss,
)


def test_statistic_negates_even_positions_and_standardises():
    entropy = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    signed = np.array([-1.0, 2.0, -3.0, 4.0, -5.0])
    expected = (signed - signed.mean()) / signed.std()  # NumPy's std is the population std
    h = sde_statistic(entropy)
    assert h.dtype == torch.float64
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-12)
    assert float(h.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(h.pow(2).mean()) == pytest.approx(1.0, rel=1e-12)


def test_statistic_of_a_constant_vector_is_finite():
    h = sde_statistic(torch.zeros(6))
    assert torch.equal(h, torch.zeros(6, dtype=torch.float64))


def test_fixed_weights_use_the_real_probability():
    gamma = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    p_true = torch.tensor([0.3, 0.999, 1.0])
    w1, w2 = sample_weights(gamma, p_true)
    np.testing.assert_allclose(w1.numpy(), [2.0, 1.75, 1.0], rtol=1e-7)
    np.testing.assert_allclose(w2.numpy(), [0.7, 0.001, 0.0], atol=1e-6)
    assert w1.dtype == torch.float32 and w2.dtype == torch.float32
    w1t, _ = sample_weights(gamma, p_true, temperature=2.0)
    np.testing.assert_allclose(w1t.numpy(), [4.0, 1.75**2, 1.0], rtol=1e-6)


def test_reference_weights_truncate_like_an_integer_tensor():
    gamma = torch.full((4,), 0.5, dtype=torch.float64)
    p_true = torch.tensor([0.0, 0.5, 0.9999999, 1.0])
    _, w2 = sample_weights(gamma, p_true, compat="reference")
    assert w2.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_score_and_loss():
    w1 = torch.tensor([2.0, 1.5, 1.0])
    w2 = torch.tensor([0.5, 1.0, 0.0])
    assert structure_damage_score(w1, w2).tolist() == [1.0, 1.5, 0.0]
    ce = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = weighted_classification_loss(ce, w1, w2)
    assert loss.item() == pytest.approx((1.0 + 3.0 + 0.0) / 3)
    loss.backward()
    np.testing.assert_allclose(ce.grad.numpy(), [1.0 / 3, 0.5, 0.0])


def test_sde_weights_chains_statistic_gum_and_weights():
    gen = torch.Generator().manual_seed(21)
    entropy = torch.rand(64, generator=gen) * 4
    p_true = torch.rand(64, generator=gen)
    w1, w2, gum = sde_weights(entropy, p_true)
    expected_gamma = gum_posterior(sde_statistic(entropy)).gamma
    assert torch.equal(gum.gamma, expected_gamma)
    assert torch.allclose(w1, (2 - expected_gamma).float())
    assert torch.allclose(w2, 1 - p_true)
    score = structure_damage_score(w1, w2)
    assert bool((score >= 0).all()) and bool((w1 >= 1).all()) and bool((w1 <= 2).all())


def test_bad_inputs():
    with pytest.raises(TopofrError, match="compat"):
        sample_weights(torch.zeros(2), torch.zeros(2), compat="paper")
    with pytest.raises(TopofrError, match="differ"):
        sample_weights(torch.zeros(2), torch.zeros(3))
    with pytest.raises(TopofrError, match="1-D"):
        sde_statistic(torch.zeros(2, 2, 2))
