"""Structure damage estimation (SDE): statistic, sample weights and the weighted loss (REFERENCE §1.3)."""

from __future__ import annotations

from typing import Literal

import torch

from topofr_cli.errors import TopofrError
from topofr_cli.hardness.gum import GUMResult, gum_posterior

__all__ = [
    "COMPAT_MODES",
    "sde_statistic",
    "sample_weights",
    "structure_damage_score",
    "weighted_classification_loss",
    "sde_weights",
]

COMPAT_MODES = ("fixed", "reference")


def sde_statistic(entropy: torch.Tensor) -> torch.Tensor:
    """REF's GUM input: entropy negated at even batch positions 0, 2, 4, …, then standardised.

    Standardisation uses the population std (as sklearn's `scale`); a zero std leaves the centred
    vector unscaled instead of dividing by zero (sklearn's behaviour too). float64, no sync.
    """
    if entropy.dim() != 1:
        raise TopofrError(f"sde_statistic: expected a 1-D entropy vector, got shape {tuple(entropy.shape)}")
    h = entropy.detach().to(torch.float64)
    position = torch.arange(h.shape[0], device=h.device)
    h = torch.where(position % 2 == 0, -h, h)
    centred = h - h.mean()
    std = centred.pow(2).mean().sqrt()
    return centred / torch.where(std > 0, std, torch.ones_like(std))


def sample_weights(
    gamma: torch.Tensor,
    p_true: torch.Tensor,
    temperature: float = 1.0,
    compat: Literal["fixed", "reference"] = "fixed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w1, w2) of REFERENCE §1.3: w1 = (2 − γ)^t; w2 = 1 − p_gt.

    compat="reference" reproduces REF's integer truncation (REFERENCE §2 defect 1): w2 = 1 − trunc(p_gt)
    as an integer, i.e. 1 everywhere except 0 where p_gt is exactly 1.0. Both are detached, in p_true's
    floating dtype (float32 if p_true is not floating).
    """
    if compat not in COMPAT_MODES:
        raise TopofrError(f"SDE compatibility mode: expected one of {', '.join(COMPAT_MODES)}, got {compat!r}")
    if gamma.shape != p_true.shape:
        raise TopofrError(f"sample_weights: gamma {tuple(gamma.shape)} and p_true {tuple(p_true.shape)} differ")
    dtype = p_true.dtype if p_true.is_floating_point() else torch.float32
    w1 = (2.0 - gamma.detach().to(torch.float64)).pow(temperature).to(dtype)
    p = p_true.detach()
    if compat == "fixed":
        w2 = (1.0 - p).to(dtype)
    else:
        w2 = (1 - p.to(torch.long)).to(dtype)
    return w1, w2


def structure_damage_score(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """SDS = w1 · w2: grows as γ falls and as p_gt falls (higher = more damaging / harder)."""
    return w1 * w2


def weighted_classification_loss(ce: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """L_cls = mean_i(w1_i · w2_i · CE_i); gradients flow into CE only."""
    return (w1.detach() * w2.detach() * ce).mean()


def sde_weights(
    entropy: torch.Tensor,
    p_true: torch.Tensor,
    temperature: float = 1.0,
    compat: Literal["fixed", "reference"] = "fixed",
) -> tuple[torch.Tensor, torch.Tensor, GUMResult]:
    """The whole SDE of one batch: statistic → GUM posterior → (w1, w2, GUM fit)."""
    gum = gum_posterior(sde_statistic(entropy), validate=False)
    w1, w2 = sample_weights(gum.gamma, p_true, temperature, compat)
    return w1, w2, gum
