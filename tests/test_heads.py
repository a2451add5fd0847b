"""Combined margin head against hand-computed margins (arccos, +m, cos, ×s)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.models.heads import CombinedMarginHead


def _expected_arcface(cos: np.ndarray, labels: np.ndarray, s: float, m: float) -> np.ndarray:
    out = cos.astype(np.float64).copy()
    for i, y in enumerate(labels):
        if y < 0:
            continue
        c = float(cos[i, y])
        theta = math.acos(c)
        # insightface's fallback where θ + m would pass π.
        out[i, y] = math.cos(theta + m) if theta + m <= math.pi else c - m * math.sin(math.pi - m)
    return out * s


def test_arcface_values_match_hand_computation():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-0.9, 0.9, size=(5, 7)).astype(np.float32)
    cos[3, 4] = -0.95  # θ = 2.82 > π − 0.5: the fallback branch
    labels = np.array([0, 6, -1, 4, 2])
    head = CombinedMarginHead(scale=64, m1=1, m2=0.5, m3=0)
    got = head(torch.from_numpy(cos), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(got, _expected_arcface(cos, labels, 64, 0.5), rtol=1e-5, atol=1e-4)
    # The row whose class lives elsewhere is just s·cos.
    np.testing.assert_allclose(got[2], 64 * cos[2], rtol=1e-6)


def test_target_logit_is_monotone_in_angle():
    head = CombinedMarginHead(scale=1.0, m2=0.5)
    theta = torch.linspace(0.0, math.pi, 2001)
    cos = torch.cos(theta).unsqueeze(1)
    logits = head(cos, torch.zeros(2001, dtype=torch.long)).squeeze(1)
    assert (logits[1:] <= logits[:-1] + 1e-6).all()


def test_cosface_subtracts_m3():
    cos = torch.tensor([[0.3, -0.2], [0.9, 0.1]])
    head = CombinedMarginHead(scale=30, m1=1, m2=0.0, m3=0.35)
    got = head(cos, torch.tensor([1, 0]))
    expected = 30 * torch.tensor([[0.3, -0.2 - 0.35], [0.9 - 0.35, 0.1]])
    torch.testing.assert_close(got, expected)


def test_sphereface_multiplicative_margin():
    cos = torch.tensor([[0.8, 0.1]])
    head = CombinedMarginHead(scale=2, m1=2, m2=0.0, m3=0.0)
    theta = math.acos(0.8)
    torch.testing.assert_close(head(cos, torch.tensor([0])), torch.tensor([[2 * math.cos(2 * theta), 0.2]]))


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_gradient_is_finite_at_unit_cosine(value):
    cos = torch.tensor([[value, 0.0], [0.5, value]], requires_grad=True)
    logits = CombinedMarginHead()(cos, torch.tensor([0, 1]))
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(cos.grad).all()


def test_gradient_matches_analytic_derivative():
    cos = torch.tensor([[0.6, 0.0]], requires_grad=True)
    CombinedMarginHead(scale=64, m2=0.5)(cos, torch.tensor([0]))[0, 0].backward()
    # d/dc s·cos(arccos c + m) = s·sin(θ + m)/sin θ
    theta = math.acos(0.6)
    assert cos.grad[0, 0].item() == pytest.approx(64 * math.sin(theta + 0.5) / math.sin(theta), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cosines_give_float32_finite_logits(dtype):
    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    weight = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    weight[2] = embeddings[1]  # a cosine that rounds to exactly 1 in low precision
    labels = torch.tensor([0, 2, 5, -1])
    reference = CombinedMarginHead()(embeddings @ weight.T, labels)

    low = (embeddings @ weight.T).to(dtype).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = CombinedMarginHead()(low, labels)
    assert logits.dtype == torch.float32
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(low.grad.float()).all()
    torch.testing.assert_close(logits, reference, rtol=0.0, atol=64 * 0.06)


def test_invalid_parameters_rejected():
    with pytest.raises(TopofrError, match="scale=0"):
        CombinedMarginHead(scale=0)
    with pytest.raises(TopofrError, match="m2=4"):
        CombinedMarginHead(m2=4.0)
