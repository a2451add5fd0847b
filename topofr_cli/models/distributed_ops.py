"""Collectives for the model-parallel classifier: an autograd-aware all-gather and a softmax
cross-entropy whose classes are split across ranks.

Every function degrades to plain local arithmetic when torch.distributed is not initialised, so
single-process training runs the same code path without collectives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """(rank, world_size) of the default group, or (0, 1) when not running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    if distributed_world()[1] > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def gather_parts(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of an equal-sized tensor, in rank order (`[tensor]` outside a process group).

    The one all-gather of the library: the classifier, the objective's batch and the checkpoint's
    classifier shards all gather through it.
    """
    world_size = distributed_world()[1]
    if world_size == 1:
        return [tensor]
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor)
    return parts


class _AllGather(torch.autograd.Function):
    """Concatenate every rank's [b, …] tensor in rank order (all ranks must have the same b).

    Each rank's loss depends on the whole gathered batch, so the gradient of a local row is the
    sum over ranks of the gradients its copies received there: all-reduce, then take our slice.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = distributed_world()[0], tensor.shape[0]
        return torch.cat(gather_parts(tensor), dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    if distributed_world()[1] == 1:
        return tensor
    return _AllGather.apply(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Gather equal-sized tensors (labels) in rank order; no gradient."""
    if distributed_world()[1] == 1:
        return tensor
    return torch.cat(gather_parts(tensor), dim=0)


class _ShardedCrossEntropy(torch.autograd.Function):
    """Per-sample cross-entropy of logits whose columns are split over ranks.

    Forward: global row max and Σ exp are all-reduced, the true-class logit is all-reduced from the
    one shard that holds it (others add 0). Backward needs no collective: ∂ce/∂logit = p − onehot
    on the local columns, with p computed from the global normaliser.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, local_labels: torch.Tensor):
        logits = logits.float()
        has_target = local_labels >= 0
        column = local_labels.clamp(min=0).unsqueeze(1)

        row_max = _all_reduce(logits.amax(dim=1), dist.ReduceOp.MAX)
        exp = torch.exp(logits - row_max.unsqueeze(1))
        sum_exp = _all_reduce(exp.sum(dim=1))
        probs = exp / sum_exp.unsqueeze(1)

        local_true = torch.where(has_target, logits.gather(1, column).squeeze(1) - row_max, 0.0)
        shifted_true_logit = _all_reduce(local_true)
        # log-sum-exp form: exact even where p_true underflows to 0.
        ce = torch.log(sum_exp) - shifted_true_logit
        p_true = torch.exp(-ce)
        # docs/method.md §1.3: H = −Σ_c p log(p + 1e-5), summed over every shard's columns.
        entropy = _all_reduce(-(probs * torch.log(probs + 1e-5)).sum(dim=1))

        ctx.save_for_backward(probs, column, has_target)
        ctx.mark_non_differentiable(p_true, entropy)
        return ce, p_true, entropy

    @staticmethod
    def backward(ctx, grad_ce: torch.Tensor, _grad_p_true, _grad_entropy):
        probs, column, has_target = ctx.saved_tensors
        grad = probs.scatter_add(1, column, -has_target.to(probs.dtype).unsqueeze(1))
        return grad * grad_ce.unsqueeze(1), None


def sharded_cross_entropy(
    logits: torch.Tensor, local_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(logits [B, c_local], local_labels [B] with −1 = not on this rank) -> (ce, p_true, entropy)`.

    `ce` is differentiable w.r.t. the logits; `p_true` and `entropy` are exact over all ranks'
    columns and carry no gradient.
    """
    return _ShardedCrossEntropy.apply(logits, local_labels)
