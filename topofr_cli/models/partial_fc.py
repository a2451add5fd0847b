"""Partial FC: the cosine classifier split by class across the ranks of the default process group.

Rank r holds the weight rows of classes [start_r, start_r + n_r) (sizes differ by at most one).
Each step gathers the global batch's embeddings and labels, scores them against the local shard,
applies the margin head and a sharded softmax cross-entropy. In a single process this is an
ordinary normalised-weight classifier. Everything stays on the device: no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from topofr_cli.errors import TopofrError
from topofr_cli.models.distributed_ops import (
    all_gather_no_grad,
    all_gather_with_grad,
    distributed_world,
    sharded_cross_entropy,
)


@dataclass
class ClassifierOutput:
    """Per-sample results over the global batch (ranks concatenated in rank order)."""

    ce: torch.Tensor  # [B] cross-entropy of the margin logits, differentiable
    p_true: torch.Tensor  # [B] softmax probability of the true class, detached
    entropy: torch.Tensor  # [B] −Σ_c p log(p + 1e-5) (docs/method.md §1.3), detached
    labels: torch.Tensor  # [B] global class ids


def shard_bounds(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """(first class, number of classes) held by `rank`; the first `num_classes % world_size` ranks get one extra."""
    base, extra = divmod(num_classes, world_size)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


class PartialFC(nn.Module):
    """The cosine classifier over `num_classes` identities, its weight rows split across the ranks.

    `PartialFC(embedding_size, num_classes, head)` scores `(embeddings [b, E], labels [b])` of this
    rank against its shard of class centres, applies `head` (e.g. `CombinedMarginHead`) and returns a
    `ClassifierOutput` over the global batch: per-sample cross-entropy (differentiable), p_gt and
    entropy. `sample_rate` < 1 scores every positive plus that fraction of the negative classes while
    training. Outside `torch.distributed` it is an ordinary single-process classifier.
    """

    def __init__(self, embedding_size: int, num_classes: int, head: nn.Module, sample_rate: float = 1.0):
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise TopofrError(f"head.sample_rate: {sample_rate} is not in (0, 1]")
        self.rank, self.world_size = distributed_world()
        if num_classes < self.world_size:
            raise TopofrError(
                f"head.num_classes: {num_classes} classes cannot be split over {self.world_size} ranks"
            )
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.head = head
        self.sample_rate = sample_rate
        self.class_start, self.num_local = shard_bounds(num_classes, self.world_size, self.rank)
        self.num_sample = max(1, int(sample_rate * self.num_local))
        # insightface initialises the classifier with N(0, 0.01).
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (self.num_local, embedding_size)))

    def extra_repr(self) -> str:
        return (
            f"classes={self.num_classes}, shard=[{self.class_start}, {self.class_start + self.num_local}), "
            f"embedding_size={self.embedding_size}, sample_rate={self.sample_rate}"
        )

    def _sample_classes(self, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick the local classes to score: every positive plus random negatives.

        Returns (sorted class indices [k], labels re-indexed into them). k is static so that no
        data-dependent shape forces a sync: k = max(rate·n_r, global batch) capped at n_r, which
        always has room for every positive (at most one per sample). insightface instead uses
        exactly rate·n_r, or just the positives when they outnumber it (a data-dependent size).
        """
        has_target = local_labels >= 0
        k = min(self.num_local, max(self.num_sample, local_labels.shape[0]))
        # A spare slot at index num_local absorbs the rows whose class lives on another rank.
        marks = torch.zeros(self.num_local + 1, device=local_labels.device)
        marks.scatter_(0, torch.where(has_target, local_labels, self.num_local), 1.0)
        priority = torch.rand(self.num_local, device=local_labels.device)
        priority = torch.where(
            marks[: self.num_local] > 0, 2.0, priority
        )  # positives beat any rand in [0, 1)
        chosen = torch.topk(priority, k, sorted=False).indices.sort().values
        remapped = torch.searchsorted(chosen, local_labels.clamp(min=0))
        return chosen, torch.where(has_target, remapped, -1)

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> ClassifierOutput:
        """Score this rank's [b, E] embeddings and labels as part of the global batch.

        Every rank must pass the same b (drop_last loaders). The embedding gradient returned to each
        rank is the full ∂loss/∂z_local (contributions of all shards summed), so the backbone
        gradient of the global loss is the SUM of the ranks' contributions: the engine's DDP hook
        sums (engine/distributed.py `sum_gradients_hook`) instead of DDP's default mean, which
        would shrink it by the world size (as insightface's plain DDP does). Keep this module out
        of DDP: its shards are not replicas.
        """
        embeddings = all_gather_with_grad(local_embeddings)
        labels = all_gather_no_grad(local_labels.long())
        shifted = labels - self.class_start
        local_labels_all = torch.where((shifted >= 0) & (shifted < self.num_local), shifted, -1)

        weight = self.weight
        if self.sample_rate < 1.0 and self.training:
            # With sampling, p_true and entropy are over the sampled classes only, as the reference's
            # softmax is over the logits it actually computed.
            chosen, local_labels_all = self._sample_classes(local_labels_all)
            weight = weight[chosen]  # unsampled rows receive a zero gradient

        cosine = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(weight.float(), dim=1))
        logits = self.head(cosine, local_labels_all)
        ce, p_true, entropy = sharded_cross_entropy(logits, local_labels_all)
        return ClassifierOutput(ce=ce, p_true=p_true, entropy=entropy, labels=labels)

    @torch.no_grad()
    def full_weight(self) -> torch.Tensor:
        """The whole [C, E] weight, gathered onto every rank (a collective: call it on all ranks)."""
        if self.world_size == 1:
            return self.weight.detach().clone()
        largest = shard_bounds(self.num_classes, self.world_size, 0)[1]
        padded = self.weight.new_zeros(largest, self.embedding_size)
        padded[: self.num_local] = self.weight
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        sizes = [shard_bounds(self.num_classes, self.world_size, r)[1] for r in range(self.world_size)]
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)

    @torch.no_grad()
    def load_full_weight(self, weight: torch.Tensor) -> None:
        """Copy this rank's rows out of a full [C, E] weight (e.g. from a checkpoint)."""
        expected = (self.num_classes, self.embedding_size)
        if tuple(weight.shape) != expected:
            raise TopofrError(
                f"classifier weight has shape {tuple(weight.shape)}, expected {expected} (num_classes, embedding_size)"
            )
        self.weight.copy_(weight[self.class_start : self.class_start + self.num_local])
