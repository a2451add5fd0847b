"""GUM posterior against a plain NumPy transcription of docs/method.md §1.3's EM loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.hardness import gum_posterior, sde_statistic


def numpy_gum(h: np.ndarray):
    """docs/method.md §1.3, line by line, with an early `break` (no masking, no chunks)."""
    n = len(h)
    pi, sigma2, c = 0.1, float(np.mean(h**2)), 0.2
    previous = 0.0
    iterations = 0
    for _ in range(1000):
        iterations += 1
        var = sigma2 + 1e-3
        phi = np.exp(-(h**2) / (2 * var)) / math.sqrt(2 * math.pi * var)
        gamma = pi * phi / (pi * phi + (1 - pi) * c)
        n1 = gamma.sum()
        sigma2 = float(np.sum(gamma * h**2) / n1)
        pi = min(n1 / n, 0.5)
        c1 = np.sum((1 - gamma) * h) / (n1 * (1 - pi + 1e-10))
        c2 = np.sum((1 - gamma) * h**2) / (n1 * (1 - pi + 1e-10))
        spread = 3 * c2 - c1**2
        c = 0.001 if abs(spread) < 0.001 else 1 / (2 * math.sqrt(spread) + 1e-10)
        stop = np.sum(pi * phi + (1 - pi) * c)
        if abs(stop - previous) < 1e-10:
            break
        previous = stop
    return gamma, pi, sigma2, c, iterations


def statistics(seed: int):
    rng = np.random.default_rng(seed)
    yield rng.normal(size=128)
    yield np.concatenate([rng.normal(size=450), rng.uniform(-6, 6, size=62)])  # a real outlier tail
    yield rng.standard_t(3, size=300)
    yield rng.exponential(size=64) * np.where(np.arange(64) % 2 == 0, -1, 1)


@pytest.mark.parametrize("check_every", [1, 7, 16, 1000])
def test_matches_numpy_transcription(check_every):
    for raw in statistics(11):
        h = sde_statistic(torch.tensor(raw))
        result = gum_posterior(h, check_every=check_every)
        gamma, pi, sigma2, c, iterations = numpy_gum(h.numpy())
        assert result.iterations == iterations
        np.testing.assert_allclose(result.gamma.numpy(), gamma, rtol=0, atol=1e-10)
        assert result.gamma.dtype == torch.float64
        assert float(result.pi) == pytest.approx(pi, abs=1e-12)
        assert float(result.sigma2) == pytest.approx(sigma2, rel=1e-10)
        assert float(result.c) == pytest.approx(c, rel=1e-10)


def test_hard_samples_get_small_gamma():
    rng = np.random.default_rng(12)
    raw = np.concatenate([rng.normal(size=400), np.full(8, 7.0)])
    gamma = gum_posterior(sde_statistic(torch.tensor(raw))).gamma
    assert gamma[-8:].max() < gamma[:400].median()


def test_iteration_cap_and_long_vector():
    h = sde_statistic(torch.randn(200_000, generator=torch.Generator().manual_seed(13), dtype=torch.float64))
    capped = gum_posterior(h[:500], max_iterations=3)
    assert capped.iterations == 3
    result = gum_posterior(h)
    assert result.gamma.shape == (200_000,) and bool(torch.isfinite(result.gamma).all())
    assert 0 < result.iterations < 1000


def test_bad_inputs():
    with pytest.raises(TopofrError, match="1-D"):
        gum_posterior(torch.zeros(2, 3, 3))
    with pytest.raises(TopofrError, match="1-D"):
        gum_posterior(torch.zeros(0))
    with pytest.raises(TopofrError, match="NaN"):
        gum_posterior(torch.tensor([0.0, float("nan"), 1.0]))
