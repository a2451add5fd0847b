"""PTSA loss: hand-computed cases, an independent NumPy Kruskal, gradients (docs/method.md §1.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.topology import PTSALoss, input_distances, latent_distances, ptsa_loss

# Three "images" of 4 values each (divisor sqrt(4·4) = 4): |a−b| = 1, |b−c| = √3, |a−c| = 2.
X3 = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
# Embeddings with distances 3 (0–1), 4 (0–2), 5 (1–2).
Z3 = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)


def test_hand_computed_official_and_symmetric():
    ax01, ax12, ax02 = 0.25, math.sqrt(3) / 4, 0.5
    # MST of X: (0,1), (1,2); MST of Z: (0,1), (0,2).
    official = ((ax01 - 3) ** 2 + (ax12 - 4) ** 2) / 3
    symmetric = ((ax01 - 3) ** 2 + (ax12 - 5) ** 2 + (3 - ax01) ** 2 + (4 - ax02) ** 2) / 3
    assert ptsa_loss(X3, Z3, "official").item() == pytest.approx(official, rel=1e-12)
    assert ptsa_loss(X3, Z3, "symmetric").item() == pytest.approx(symmetric, rel=1e-12)
    halved = ((ax01 - 1.5) ** 2 + (ax12 - 2) ** 2) / 3
    assert ptsa_loss(X3, Z3, "official", latent_scale=2.0).item() == pytest.approx(halved, rel=1e-12)


def test_image_normalisation_is_largest_possible_distance():
    x = torch.stack([-torch.ones(3, 112, 112), torch.ones(3, 112, 112), torch.zeros(3, 112, 112)])
    dist = input_distances(x)
    assert dist.dtype == torch.float32
    assert dist[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert dist[0, 2].item() == pytest.approx(0.5, abs=1e-6)
    assert torch.equal(dist, dist.T) and bool((dist.diagonal() == 0).all())


def kruskal(dist: np.ndarray) -> list[tuple[int, int]]:
    n = len(dist)
    edges = sorted((dist[i, j], i, j) for i in range(n) for j in range(i + 1, n))
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    tree = []
    for _, i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            tree.append((i, j))
    return tree


def numpy_ptsa(x: np.ndarray, z: np.ndarray, form: str, scale: float) -> float:
    flat = x.reshape(len(x), -1)
    ax = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1)) / np.sqrt(4 * flat.shape[1])
    az = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1)) / scale
    tx, tz = kruskal(ax), kruskal(az)
    dx = np.array([ax[e] for e in tx])
    dz = np.array([az[e] for e in tz])
    if form == "official":
        loss = ((dx - dz) ** 2).sum()
    else:
        loss = ((dx - np.array([az[e] for e in tx])) ** 2).sum() + (
            (dz - np.array([ax[e] for e in tz])) ** 2
        ).sum()
    return loss / len(x)


@pytest.mark.parametrize("form", ["official", "symmetric"])
def test_matches_numpy_kruskal(form):
    rng = np.random.default_rng(5)
    for _ in range(6):
        b = int(rng.integers(2, 24))
        x = rng.uniform(-1, 1, size=(b, 3, 6, 5))
        z = rng.normal(size=(b, 8))
        scale = float(rng.uniform(0.5, 2.0))
        ours = ptsa_loss(torch.tensor(x), torch.tensor(z), form, latent_scale=scale).item()
        assert ours == pytest.approx(numpy_ptsa(x, z, form, scale), rel=1e-9)


@pytest.mark.parametrize("form", ["official", "symmetric"])
def test_gradcheck_z_and_scale(form):
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(7, 2, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1
    z = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda zz, s: ptsa_loss(x, zz, form, latent_scale=s), (z, scale))


def test_no_gradient_into_x_and_finite_gradient_for_duplicates():
    x = torch.rand(6, 3, 4, 4, requires_grad=True)
    z = torch.randn(6, 16)
    z = torch.cat([z, z[:2]]).requires_grad_(True)  # two duplicated embeddings: zero distances
    x8 = torch.cat([x, x[:2]])
    loss = ptsa_loss(x8, z, "symmetric")
    loss.backward()
    assert x.grad is None
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    dz = latent_distances(z.detach())
    assert dz[0, 6].item() == 0.0 and torch.equal(dz, dz.T)


def test_single_sample_and_bad_inputs():
    z = torch.randn(1, 4, requires_grad=True)
    loss = ptsa_loss(torch.zeros(1, 3, 2, 2), z)
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(TopofrError, match="form"):
        ptsa_loss(X3, Z3, "both")
    with pytest.raises(TopofrError, match="samples"):
        ptsa_loss(X3[:2], Z3)
    with pytest.raises(TopofrError, match=r"\[B, E\]"):
        ptsa_loss(X3, Z3[:, :, None])


def test_module_learns_the_latent_scale():
    torch.manual_seed(7)
    x = torch.rand(10, 3, 4, 4) * 2 - 1
    z = torch.randn(10, 6) * 5
    module = PTSALoss("official", learnable=True)
    assert module.latent_scale_value() == pytest.approx(1.0)
    assert module(x, z).item() == pytest.approx(ptsa_loss(x, z).item(), rel=1e-6)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3)
    start = module(x, z).item()
    for _ in range(20):
        opt.zero_grad()
        module(x, z).backward()
        opt.step()
    assert module.latent_scale_value() > 1.0  # large embeddings vs distances ≤ 1: λ must grow
    assert module(x, z).item() < start
    assert PTSALoss.from_config("symmetric", "fixed").learnable
    with pytest.raises(TopofrError, match="compat"):
        PTSALoss.from_config("official", "paper")
    reference = PTSALoss.from_config("symmetric", "reference")
    assert list(reference.parameters()) == [] and reference.latent_scale_value() is None
    assert reference(x, z).item() == pytest.approx(ptsa_loss(x, z, "symmetric").item(), rel=1e-6)


@pytest.mark.parametrize("form", ["official", "symmetric"])
def test_loss_forward_and_backward_never_read_device_data(form):
    # On the meta device any host–device synchronisation (.item(), bool(), nonzero) would raise.
    x = torch.empty(12, 3, 112, 112, device="meta")
    z = torch.empty(12, 64, device="meta", requires_grad=True)
    scale = torch.empty((), device="meta", requires_grad=True)
    loss = ptsa_loss(x, z, form, latent_scale=scale)
    loss.backward()
    assert loss.shape == () and z.grad.shape == z.shape and scale.grad.shape == ()


def test_reference_arithmetic_is_the_references_float32_broadcast_norm(monkeypatch):
    """compat: reference takes A^X as the reference computes it: the norm of the float32 differences of
    every pair (its B × B × D broadcast), bit for bit, here a few rows at a time."""
    import topofr_cli.topology.ptsa as ptsa_module

    x = torch.rand(9, 3, 8, 8) * 2 - 1
    flat = x.reshape(9, -1)
    transcription = torch.norm(flat.unsqueeze(1) - flat.unsqueeze(0), dim=-1) / math.sqrt(4 * flat.shape[1])
    assert torch.equal(input_distances(x, reference_arithmetic=True), transcription)
    monkeypatch.setattr(ptsa_module, "_COMPAT_CHUNK_ELEMENTS", 2 * flat.numel() // 9 * 9)  # 2 rows a block
    assert torch.equal(input_distances(x, reference_arithmetic=True), transcription)
    # the default (float64 Gram) agrees to float32 rounding, not bit for bit
    torch.testing.assert_close(input_distances(x), transcription, rtol=1e-5, atol=1e-6)


def test_reference_mode_selects_the_reference_input_arithmetic():
    assert PTSALoss.from_config("symmetric", "reference").reference_arithmetic
    assert not PTSALoss.from_config("symmetric", "fixed").reference_arithmetic
    x, z = torch.rand(6, 3, 4, 4) * 2 - 1, torch.randn(6, 5)
    expected = ptsa_loss(x, z, "symmetric", reference_arithmetic=True)
    assert torch.equal(PTSALoss.from_config("symmetric", "reference")(x, z), expected)
