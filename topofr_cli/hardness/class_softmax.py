"""Per-sample statistics of the margin softmax over a classifier too large to hold [B, C] at once.

The classifier may have millions of classes, so the softmax is never materialised: cosine logits
are produced one block of classes at a time and reduced with a streaming log-sum-exp. The
entropy's `log(p + 1e-5)` (docs/method.md §1.3) is not shift-invariant, so it cannot be folded into
the same online pass: a second pass over the class blocks adds it once the normaliser is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

import torch
import torch.nn.functional as F

ENTROPY_EPS = 1e-5  # docs/method.md §1.3: H = −Σ p log(p + 1e-5)
DEFAULT_CLASS_BLOCK = 65536


@dataclass
class ClassStats:
    """Margin-softmax figures for one batch (all tensors [B] on the batch's device)."""

    p_true: torch.Tensor  # probability of the labelled class
    predicted: torch.Tensor  # int64 class of the largest cosine: the model's decision (no margin)
    p_predicted: torch.Tensor  # its margin-softmax probability (= p_true when it is the label)
    runner_up: torch.Tensor  # int64 class of the second-largest cosine (−1 when C = 1)
    p_runner_up: torch.Tensor
    cosine_gap: torch.Tensor  # cos θ_predicted − cos θ_runner_up (≥ 0; inf when C = 1)
    _: KW_ONLY  # at most six fields by position
    entropy: torch.Tensor


def normalized_classifier(weight: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Row-normalised fp32 classifier [C, E] on `device` (the cosine logits' right operand)."""
    return F.normalize(weight.to(device=device, dtype=torch.float32), dim=1)


def margin_softmax_stats(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    weight_normed: torch.Tensor,
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    class_block: int = DEFAULT_CLASS_BLOCK,
) -> ClassStats:
    """Statistics of p = softmax(head(cos θ, y)) without materialising more than [B, class_block].

    `head` is a margin head with the Partial FC convention: label −1 means the true class is not
    in this block of classes, so the margin lands only in the block that holds it.
    """
    if class_block < 1:
        raise ValueError("class_block must be positive")
    z = F.normalize(embeddings.float(), dim=1)
    labels = labels.to(device=z.device, dtype=torch.int64)
    num_classes = weight_normed.shape[0]
    starts = range(0, num_classes, class_block)
    batch = z.shape[0]
    neg_inf = torch.full((batch,), float("-inf"), device=z.device)

    def block_logits(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        stop = min(start + class_block, num_classes)
        cosine = z @ weight_normed[start:stop].T
        local = labels - start
        inside = (local >= 0) & (local < stop - start)
        return cosine, head(cosine, torch.where(inside, local, torch.full_like(local, -1))).float()

    # Pass 1: online log-sum-exp, the labelled logit, and the two largest cosines with their logits.
    # The prediction is taken from the cosines: the margin is a training device that penalises
    # only the labelled class, so the margin logits' argmax is biased against the label.
    running_max = neg_inf.clone()
    running_sum = torch.zeros(batch, device=z.device)
    true_logit = neg_inf.clone()
    top_cosines = torch.stack([neg_inf, neg_inf], dim=1)
    top_logits = top_cosines.clone()
    top_indices = torch.full((batch, 2), -1, dtype=torch.int64, device=z.device)
    cached: torch.Tensor | None = None
    for start in starts:
        cosine, logits = block_logits(start)
        if len(starts) == 1:
            cached = logits
        new_max = torch.maximum(running_max, logits.max(dim=1).values)
        running_sum = running_sum * torch.exp(running_max - new_max) + torch.exp(
            logits - new_max[:, None]
        ).sum(dim=1)
        running_max = new_max
        local = labels - start
        inside = (local >= 0) & (local < logits.shape[1])
        picked = logits.gather(1, local.clamp(0, logits.shape[1] - 1)[:, None]).squeeze(1)
        true_logit = torch.where(inside, picked, true_logit)
        block_cosines, block_indices = cosine.topk(min(2, cosine.shape[1]), dim=1)
        cosines = torch.cat([top_cosines, block_cosines], dim=1)
        candidate_logits = torch.cat([top_logits, logits.gather(1, block_indices)], dim=1)
        indices = torch.cat([top_indices, block_indices + start], dim=1)
        top_cosines, order = cosines.topk(2, dim=1)
        top_logits = candidate_logits.gather(1, order)
        top_indices = indices.gather(1, order)
    log_normalizer = running_max + torch.log(running_sum)

    # Pass 2: −Σ p log(p + eps), now that log Z is known.
    entropy = torch.zeros(batch, device=z.device)
    for start in starts:
        logits = cached if cached is not None else block_logits(start)[1]
        p = torch.exp(logits - log_normalizer[:, None])
        entropy -= (p * torch.log(p + ENTROPY_EPS)).sum(dim=1)

    return ClassStats(
        p_true=torch.exp(true_logit - log_normalizer),
        predicted=top_indices[:, 0],
        p_predicted=torch.exp(top_logits[:, 0] - log_normalizer),
        runner_up=top_indices[:, 1],
        p_runner_up=torch.exp(top_logits[:, 1] - log_normalizer),
        cosine_gap=top_cosines[:, 0] - top_cosines[:, 1],
        entropy=entropy,
    )
