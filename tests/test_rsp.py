"""RSP: input untouched, selection rate, determinism, and each operation's output (docs/method.md §1.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from topofr_cli.augment.rsp import (
    RandomStructurePerturbation,
    color_jitter,
    erase_boxes,
    gaussian_blur,
    grayscale,
)
from topofr_cli.errors import TopofrError


def batch(b: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    # Values in [-0.95, 0.95] never hit exactly 0, so erased pixels are recognisable.
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, size, size, generator=gen) * 1.9 - 0.95).clamp_min(-0.95)


def run(prob: float, x: torch.Tensor, seed: int, compact: bool | None = None):
    rsp = RandomStructurePerturbation(prob, compact=compact)
    params = rsp.draw(x.shape[0], x.device, torch.Generator().manual_seed(seed))
    out, mask = rsp(x, torch.Generator().manual_seed(seed))
    return out, mask, params


def test_input_is_never_modified_and_unselected_samples_are_identical():
    x = batch()
    before = x.clone()
    out, mask, _ = run(0.5, x, seed=1)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(out[~mask], x[~mask])
    assert mask.any() and (~mask).any()


def test_selection_rate_is_prob():
    x = batch(b=4000, size=8)
    _, mask, params = run(0.2, x, seed=2)
    rate = mask.float().mean().item()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 4000)
    counts = torch.bincount(params["op"][mask], minlength=4).float() / mask.sum()
    assert bool(((counts - 0.25).abs() < 0.06).all())  # four operations chosen uniformly
    assert not run(0.0, batch(8), seed=3)[1].any() and run(1.0, batch(8), seed=3)[1].all()


def test_deterministic_for_a_seed_and_paths_agree():
    x = batch()
    a, mask_a, _ = run(0.6, x, seed=4, compact=True)
    b, mask_b, _ = run(0.6, x, seed=4, compact=True)
    c, mask_c, _ = run(0.6, x, seed=4, compact=False)  # the masked (accelerator) path
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b) and torch.equal(mask_a, mask_c)
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
    d, _, _ = run(0.6, x, seed=5)
    assert not torch.equal(a, d)


def test_each_operation_in_the_batch():
    x = batch(b=96, size=24, seed=6)
    out, mask, params = run(1.0, x, seed=7)
    op = params["op"]
    gray = out[op == 1]
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    erased = out[op == 3] == 0
    assert erased.any()
    for sample, zeros, original in zip(out[op == 3], erased, x[op == 3], strict=True):
        pixels = zeros.all(dim=0)  # erased pixels are 0 in all three channels
        assert torch.equal(pixels, zeros[0])
        rows, cols = pixels.any(dim=1).nonzero(), pixels.any(dim=0).nonzero()
        if len(rows):  # a filled rectangle covering 2%–33% of the image (up to rounding)
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert pixels.sum() == box
            assert 0.01 * 24 * 24 <= box <= 0.40 * 24 * 24
        assert torch.equal(sample[:, ~pixels], original[:, ~pixels])
    for k in (0, 2):  # blur and jitter stay in [-1, 1] and change the image
        assert bool((out[op == k].abs() <= 1.0 + 1e-6).all())
        assert not torch.allclose(out[op == k], x[op == k])


def reference_kernel(sigma: float, size: int) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def test_blur_matches_a_direct_2d_convolution_and_is_5_wide_9_tall():
    gen = torch.Generator().manual_seed(8)
    u = torch.rand(3, 3, 20, 17, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.3, 5.0], dtype=torch.float64)
    out = gaussian_blur(u, sigma)
    for k in range(3):
        kernel = np.outer(reference_kernel(sigma[k].item(), 9), reference_kernel(sigma[k].item(), 5))
        weight = torch.tensor(kernel).expand(3, 1, 9, 5)
        padded = F.pad(u[k : k + 1], (2, 2, 4, 4), mode="reflect")
        torch.testing.assert_close(out[k : k + 1], F.conv2d(padded, weight, groups=3), atol=1e-12, rtol=0)
    impulse = torch.zeros(1, 3, 21, 21, dtype=torch.float64)
    impulse[..., 10, 10] = 1.0
    spread = gaussian_blur(impulse, torch.tensor([3.0], dtype=torch.float64))[0, 0] > 0
    rows, cols = spread.any(dim=1).nonzero(), spread.any(dim=0).nonzero()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (9, 5)
    constant = torch.full((2, 3, 12, 12), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([0.5, 4.0])), constant, atol=1e-6, rtol=0)


def test_grayscale_uses_luma_weights():
    u = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(grayscale(u), torch.full((1, 3, 2, 2), 0.2989))


def colour(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).reshape(1, 3, 1, 1)


def jitter(u: torch.Tensor, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=(0, 1, 2, 3)):
    factors = torch.tensor([[brightness, contrast, saturation, hue]])
    return color_jitter(u, factors, torch.tensor([order]))


def test_color_jitter_factors_by_hand():
    u = colour(0.8, 0.4, 0.2)
    assert torch.allclose(jitter(u), u, atol=1e-6)  # identity factors
    assert torch.allclose(jitter(u, brightness=0.5), colour(0.4, 0.2, 0.1), atol=1e-6)
    luma = 0.2989 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2
    assert torch.allclose(jitter(u, saturation=0.0), torch.full((1, 3, 1, 1), luma), atol=1e-6)
    half = 0.5 * u + 0.5 * luma  # single pixel: its mean grey level is its luma
    assert torch.allclose(jitter(u, contrast=0.5), half, atol=1e-6)
    # Hue rotation by a third of a turn: red → green → blue; a grey pixel does not change.
    assert torch.allclose(jitter(colour(1.0, 0.0, 0.0), hue=1 / 3), colour(0.0, 1.0, 0.0), atol=1e-5)
    assert torch.allclose(jitter(colour(0.0, 1.0, 0.0), hue=1 / 3), colour(0.0, 0.0, 1.0), atol=1e-5)
    assert torch.allclose(jitter(colour(0.5, 0.5, 0.5), hue=0.25), colour(0.5, 0.5, 0.5), atol=1e-6)
    # Orange (hue 1/12) shifted by −1/12 is pure red at the same value and saturation.
    assert torch.allclose(jitter(colour(1.0, 0.5, 0.0), hue=-1 / 12), colour(1.0, 0.0, 0.0), atol=1e-5)
    # Order matters: brightness then contrast differs from contrast then brightness only by clamping.
    bright_first = jitter(colour(0.9, 0.1, 0.1), brightness=0.3, contrast=0.4, order=(0, 1, 2, 3))
    contrast_first = jitter(colour(0.9, 0.1, 0.1), brightness=0.3, contrast=0.4, order=(1, 0, 2, 3))
    assert torch.allclose(bright_first, contrast_first, atol=1e-6)


def test_erase_boxes_pick_the_first_fitting_attempt():
    area = torch.tensor([[0.9, 0.25], [0.9, 0.9]])  # first try too large (aspect 4 → taller than the image)
    log_aspect = torch.log(torch.tensor([[4.0, 1.0], [4.0, 4.0]]))
    masks = erase_boxes((2, 3, 10, 10), area, log_aspect, torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert masks[0].sum() == 25 and masks[0, :5, 5:].all()  # 5×5 box at the top-right corner
    assert not masks[1].any()  # no attempt fits: nothing erased


def test_bad_inputs():
    with pytest.raises(TopofrError, match="probability"):
        RandomStructurePerturbation(1.5)
    with pytest.raises(TopofrError, match=r"\[B, 3, H, W\]"):
        RandomStructurePerturbation()(torch.zeros(2, 1, 4, 4))
    with pytest.raises(TopofrError, match="too small"):
        RandomStructurePerturbation()(torch.zeros(2, 3, 4, 4))


def test_accelerator_path_never_reads_device_data():
    # The masked (accelerator) path on the meta device: any host–device sync would raise there.
    x = torch.empty(32, 3, 112, 112, device="meta")
    out, mask = RandomStructurePerturbation(0.2, compact=False)(x)
    assert out.shape == x.shape and mask.shape == (32,) and out.device.type == "meta"
