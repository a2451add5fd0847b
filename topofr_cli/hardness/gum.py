"""Gaussian–uniform mixture (GUM) fitted by EM: the structure-damage posterior of docs/method.md §1.3.

The EM loop is the one the reference runs (same initialisation, updates, 1000-iteration cap and stopping rule,
float64), vectorised on the statistic's device.  The stopping rule is evaluated on the device every
iteration; iterations after convergence are *masked* (the state is frozen with torch.where), and the
host only looks at the "converged" flag once per `check_every` iterations. So the result — γ, the
parameters and the iteration count — is exactly that of the stop-at-once loop, at one host–device
synchronisation per chunk instead of one per iteration.  Memory is O(n): the whole-dataset fit of
`topofr hard-samples` runs over millions of entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from topofr_cli.errors import TopofrError

__all__ = ["GUMResult", "gum_posterior", "MAX_ITERATIONS", "TOLERANCE"]

MAX_ITERATIONS = 1000
TOLERANCE = 1e-10
PI_CAP = 0.5
VARIANCE_FLOOR = 1e-3  # added to σ² inside the Gaussian density
SMALL = 1e-10


@dataclass
class GUMResult:
    """Posterior γ of the Gaussian ("normal sample") component and the fitted mixture.

    gamma: float64 [n] (small γ = hard sample); pi, sigma2, c: float64 scalars (0-dim tensors on
    the input's device); iterations: EM iterations run (≤ 1000).
    """

    gamma: torch.Tensor
    pi: torch.Tensor
    sigma2: torch.Tensor
    c: torch.Tensor
    iterations: int


def _em_iteration(
    h: torch.Tensor, h2: torch.Tensor, pi: torch.Tensor, sigma2: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """One EM iteration of docs/method.md §1.3 over the last dimension (the parameters are [..., 1]);
    returns (γ, π', σ²', c', stop quantity)."""
    n = h.shape[-1]
    variance = sigma2 + VARIANCE_FLOOR
    phi = torch.exp(-0.5 * h2 / variance) / torch.sqrt(2.0 * math.pi * variance)
    gaussian = pi * phi
    gamma = gaussian / (gaussian + (1.0 - pi) * c)
    n1 = gamma.sum(-1, keepdim=True)
    new_sigma2 = (gamma * h2).sum(-1, keepdim=True) / n1
    new_pi = torch.clamp(n1 / n, max=PI_CAP)
    outlier = 1.0 - gamma
    norm = n1 * (1.0 - new_pi + SMALL)
    c1 = (outlier * h).sum(-1, keepdim=True) / norm
    c2 = (outlier * h2).sum(-1, keepdim=True) / norm
    spread = 3.0 * c2 - c1 * c1
    # A negative spread gives NaN exactly as the reference's np.sqrt does (the reference has no guard either).
    new_c = torch.where(
        spread.abs() < 0.001, torch.full_like(spread, 0.001), 1.0 / (2.0 * torch.sqrt(spread) + SMALL)
    )
    # The stop quantity uses this iteration's φ with the just-updated π and c (as the reference).
    likelihood = (new_pi * phi + (1.0 - new_pi) * new_c).sum(-1, keepdim=True)
    return gamma, new_pi, new_sigma2, new_c, likelihood


def gum_posterior(
    h: torch.Tensor,
    *,
    max_iterations: int = MAX_ITERATIONS,
    check_every: int = 16,
    validate: bool = True,
) -> GUMResult:
    """Fit the Gaussian–uniform mixture to the (standardised) statistic `h` [n] by EM (docs/method.md §1.3).

    init π = 0.1, μ = 0 (fixed), σ² = mean(h²), c = 0.2; stop when the stop quantity changes by less
    than 1e-10 (its "previous" value starts at 0) or after `max_iterations`. Computed in float64 on
    h's device. `validate=False` skips the finiteness check (a host–device sync).

    A 2-D `h` [R, n] fits R independent mixtures at once, one per row, each stopping on its own
    (the reference's multi-GPU setting: one fit per rank's local batch); π, σ², c are then [R] and
    `iterations` is the largest row's count.
    """
    if h.dim() not in (1, 2) or h.shape[-1] == 0:
        raise TopofrError(
            f"gum_posterior: expected a non-empty 1-D statistic (or one per row), got shape {tuple(h.shape)}"
        )
    if check_every < 1:
        raise TopofrError(f"gum_posterior: check_every must be ≥ 1, got {check_every}")
    h = h.detach().to(torch.float64)
    if validate and not bool(torch.isfinite(h).all()):
        raise TopofrError("gum_posterior: the statistic contains NaN/inf")
    h2 = h * h
    zero = h.new_zeros((*h.shape[:-1], 1))
    pi = zero + 0.1
    sigma2 = h2.mean(-1, keepdim=True)
    c = zero + 0.2
    previous = zero.clone()
    gamma = torch.zeros_like(h)
    done = torch.zeros_like(zero, dtype=torch.bool)
    iterations = torch.zeros_like(zero, dtype=torch.long)

    run = 0
    while run < max_iterations:
        for _ in range(min(check_every, max_iterations - run)):
            new_gamma, new_pi, new_sigma2, new_c, likelihood = _em_iteration(h, h2, pi, sigma2, c)
            active = ~done
            gamma = torch.where(active, new_gamma, gamma)
            pi = torch.where(active, new_pi, pi)
            sigma2 = torch.where(active, new_sigma2, sigma2)
            c = torch.where(active, new_c, c)
            iterations = iterations + active.long()
            done = done | ((likelihood - previous).abs() < TOLERANCE)
            previous = torch.where(active, likelihood, previous)
            run += 1
        if bool(done.all()):  # the only sync: once per chunk
            break
    return GUMResult(
        gamma=gamma,
        pi=pi.squeeze(-1),
        sigma2=sigma2.squeeze(-1),
        c=c.squeeze(-1),
        iterations=int(iterations.max()),
    )
