"""Undo, on the device, a training step that made the model non-finite or whose loss was not finite.

A finite loss with finite gradients can still give a non-finite update (a huge learning rate, an
overflowing momentum), and a forward pass that overflows writes NaN into BatchNorm's running
statistics even though the optimizers skip that step. Which step does so is only known afterwards, and
asking would cost a host-device synchronisation per step. So every step copies the parameters, their
optimizer state and the modules' floating buffers first (one multi-tensor copy), checks them after the
update with one multi-tensor max-norm (NaN and ±inf both survive it), and selects the copy back when
the check failed or the loss was not finite (`torch.where` on a 0-dim flag; selecting the live value
when nothing went wrong). Such a step is reported as bad, like a non-finite loss. Cost: one extra copy
of all of it in memory, and about three passes over it per step.
"""

from __future__ import annotations

import torch

from topofr_cli.engine.distributed import DistContext, all_reduce_max_


def _floating_state(
    optimizers: list[torch.optim.Optimizer], modules: list[torch.nn.Module]
) -> list[torch.Tensor]:
    """Every parameter the optimizers update, every floating tensor of their state and every floating
    buffer of `modules`, in a fixed order."""
    tensors: list[torch.Tensor] = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                tensors.append(param.detach())
                tensors += [
                    value
                    for value in optimizer.state.get(param, {}).values()
                    if isinstance(value, torch.Tensor) and value.is_floating_point()
                ]
    return tensors


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the state fused SGD/AdamW would create on their first step, as they would (zeros), so that
    it exists to be saved before the first update and a skipped first step leaves it as it was.

    Fused SGD allocates its momentum buffers uninitialised on its first step: a first step skipped by
    `found_inf` would otherwise leave garbage there (zeros give the same first update, 0·μ + g = g)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if isinstance(optimizer, torch.optim.SGD) and group["momentum"] != 0:
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            elif isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if group.get("amsgrad"):
                    state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


class UpdateGuard:
    """`save()` before the forward pass, `undo_if_bad(bad_loss)` after the update."""

    def __init__(
        self, optimizers: list[torch.optim.Optimizer], modules: list[torch.nn.Module], ctx: DistContext
    ) -> None:
        self.optimizers = optimizers
        self.modules = modules
        self.ctx = ctx
        self._saved: list[torch.Tensor] = []

    def save(self) -> None:
        live = _floating_state(self.optimizers, self.modules)
        if [t.shape for t in self._saved] != [t.shape for t in live]:  # the first step, or a new state
            self._saved = [torch.empty_like(t) for t in live]
        torch._foreach_copy_(self._saved, live)

    def undo_if_bad(self, bad_loss: torch.Tensor) -> torch.Tensor:
        """Put every tensor back to its saved value when `bad_loss` (0-dim, 1.0 = bad, the same on every
        rank) is set or any of them is no longer finite; returns the 0-dim non-finite flag."""
        live = _floating_state(self.optimizers, self.modules)
        norms = torch._foreach_norm(live, ord=float("inf"))
        non_finite = (~torch.stack([n.float() for n in norms]).isfinite().all()).float()
        all_reduce_max_(self.ctx, non_finite)  # all ranks undo together, or DDP replicas drift apart
        undo = torch.maximum(non_finite, bad_loss).bool()
        for saved, tensor in zip(self._saved, live, strict=True):
            torch.where(undo, saved, tensor, out=tensor)
        return non_finite
