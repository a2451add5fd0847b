"""Structure damage estimation (SDE): statistic, sample weights and the weighted loss (docs/method.md §1.3)."""

from __future__ import annotations

from typing import Literal

import torch

from topofr_cli.errors import TopofrError
from topofr_cli.hardness.gum import GUMResult, gum_posterior

__all__ = [
    "COMPAT_MODES",
    "negated_positions",
    "sde_statistic",
    "sample_weights",
    "structure_damage_score",
    "weighted_classification_loss",
    "sde_weights",
]

COMPAT_MODES = ("fixed", "reference")


def negated_positions(
    n: int, compat: Literal["fixed", "reference"] = "fixed", device: torch.device | None = None
) -> torch.Tensor:
    """Bool mask [n] of the batch positions whose entropy is negated before the GUM fit.

    fixed: every even position 0, 2, 4, … (so a sample's sign depends on its parity alone).
    reference: the reference's `2·arange(n // 2)`, which for an odd n leaves the last even position, n − 1,
    positive (docs/method.md §2). The two agree for every even n.
    """
    position = torch.arange(n, device=device)
    mask = position % 2 == 0
    if compat == "reference":
        mask = mask & (position < 2 * (n // 2))
    return mask


def sde_statistic(entropy: torch.Tensor, compat: Literal["fixed", "reference"] = "fixed") -> torch.Tensor:
    """The GUM input: entropy negated at even batch positions (see `negated_positions`), then standardised.

    Standardisation uses the population std (as sklearn's `scale`); a zero std leaves the centred
    vector unscaled instead of dividing by zero (sklearn's behaviour too). float64, no sync.
    A 2-D entropy [R, n] is treated as R separate batches (one per rank), each negated and
    standardised on its own, as each of the reference's processes does with its local batch.
    """
    if entropy.dim() not in (1, 2):
        raise TopofrError(
            f"sde_statistic: expected a 1-D entropy vector (or one per row), got shape {tuple(entropy.shape)}"
        )
    _check_compat(compat)
    h = entropy.detach().to(torch.float64)
    h = torch.where(negated_positions(h.shape[-1], compat, h.device), -h, h)
    centred = h - h.mean(-1, keepdim=True)
    std = centred.pow(2).mean(-1, keepdim=True).sqrt()
    return centred / torch.where(std > 0, std, torch.ones_like(std))


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise TopofrError(
            f"SDE compatibility mode: expected one of {', '.join(COMPAT_MODES)}, got {compat!r}"
        )


def sample_weights(
    gamma: torch.Tensor,
    p_true: torch.Tensor,
    temperature: float = 1.0,
    compat: Literal["fixed", "reference"] = "fixed",
    softmax_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w1, w2) of docs/method.md §1.3: w1 = (2 − γ)^t; w2 = 1 − p_gt.

    compat="reference" reproduces the reference's integer truncation (docs/method.md §2 defect 1): w2 = 1 − trunc(p_gt)
    as an integer, i.e. 1 everywhere except 0 where p_gt is exactly 1.0. The reference's softmax runs in
    its autocast dtype: pass it as `softmax_dtype` (float16 under its fp16) and p_gt is rounded to it
    first, so that p_gt ≥ 0.99976 becomes 1.0 and the sample's classification loss is gated off
    (docs/method.md §2). Both are detached, in p_true's floating dtype (float32 if p_true is not floating).
    """
    _check_compat(compat)
    if gamma.shape != p_true.shape:
        raise TopofrError(
            f"sample_weights: gamma {tuple(gamma.shape)} and p_true {tuple(p_true.shape)} differ"
        )
    dtype = p_true.dtype if p_true.is_floating_point() else torch.float32
    w1 = (2.0 - gamma.detach().to(torch.float64)).pow(temperature).to(dtype)
    p = p_true.detach()
    if compat == "fixed":
        w2 = (1.0 - p).to(dtype)
    else:
        if softmax_dtype is not None:
            p = p.to(softmax_dtype)
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
    *,
    groups: int = 1,
    softmax_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, GUMResult]:
    """The whole SDE of one batch: statistic → GUM posterior → (w1, w2, GUM fit).

    `groups` > 1 splits the batch into that many equal contiguous parts (the ranks' local batches,
    in rank order) and fits one GUM per part, as the reference's processes do; 1 fits one GUM over the whole
    batch. With groups > 1 the fit's π, σ², c are per group.
    """
    if groups < 1 or entropy.shape[0] % groups:
        raise TopofrError(
            f"sde_weights: {entropy.shape[0]} entropies do not split into {groups} equal groups"
        )
    statistic = sde_statistic(entropy.reshape(groups, -1) if groups > 1 else entropy, compat)
    gum = gum_posterior(statistic, validate=False)
    gum.gamma = gum.gamma.reshape(entropy.shape)
    w1, w2 = sample_weights(gum.gamma, p_true, temperature, compat, softmax_dtype)
    return w1, w2, gum
