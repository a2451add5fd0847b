"""Learning-rate schedule: linear warm-up then polynomial decay, evaluated per optimizer step.

docs/method.md §4: the reference trains with polynomial decay of power 2 and no warm-up (insightface's PolyScheduler).
The schedule is a pure function of the step index, so resuming needs nothing but the step count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PolySchedule:
    """lr(step) for step = 0, 1, … (the index of the optimizer step about to be taken).

    Warm-up: base_lr · (step + 1) / warmup_steps, so the first step already moves the weights.
    Decay:   base_lr · (1 − (step − warmup_steps) / (total_steps − warmup_steps)) ** power,
    reaching 0 at `total_steps` and staying there.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    power: float = 2.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be within [0, {self.total_steps}], got {self.warmup_steps}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return 0.0
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.base_lr * (1.0 - progress) ** self.power

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for `step` (a Python float: no device work)."""
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_multiplier", 1.0)
        return lr

    def state_dict(self) -> dict[str, float | int]:
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "power": self.power,
        }
