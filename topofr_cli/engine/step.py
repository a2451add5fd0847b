"""One training step: device transfer, normalisation, flip, autocast forward, loss, backward, clip, update.

No host–device synchronisation happens here: a non-finite loss (or gradient) is turned into a
`found_inf` tensor that the fused optimizers read on the device to skip their update, exactly as
GradScaler does for fp16; an update that would leave a parameter non-finite is undone on the device
(engine/update_guard.py). The caller reads the returned tensors only at log steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from topofr_cli.data.loader import normalize
from topofr_cli.engine.compat import SCALER_GROWTH_INTERVAL
from topofr_cli.engine.distributed import DistContext, all_reduce_max_, all_reduce_sum_
from topofr_cli.engine.objective import Objective
from topofr_cli.engine.update_guard import UpdateGuard, init_optimizer_state

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def effective_precision(precision: str, device: torch.device) -> str:
    """fp16 autocast on CPU is slow and unscaled gradients underflow: CPU runs use bf16 instead."""
    return "bf16" if precision == "fp16" and device.type == "cpu" else precision


def make_scaler(precision: str, device: torch.device, *, growth_interval: int) -> torch.amp.GradScaler | None:
    """The GradScaler fp16 needs (None for fp32/bf16, and on the CPU, where fp16 runs as bf16)."""
    if effective_precision(precision, device) != "fp16":
        return None
    return torch.amp.GradScaler(device.type, growth_interval=growth_interval)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the per-step augmentation generator: a pure function of (seed, step, rank), so that a
    resumed run draws the same flips and perturbations as an uninterrupted one."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % (2**63 - 1)


@dataclass
class StepResult:
    """Detached device tensors; reading them (`.item()`) is the caller's sync, at log steps only."""

    loss: torch.Tensor
    bad: torch.Tensor  # 1.0 when the loss or the update was not finite (a bad step)
    skipped: torch.Tensor  # 1.0 when the optimizers did not update (bad loss, gradients or update)
    grad_norm: torch.Tensor  # gradient norm before clipping: backbone (and classifier with clip_classifier)
    terms: dict[str, torch.Tensor]


class TrainStep:
    """One optimisation step, called as `step(images_uint8, labels, step_index) -> StepResult`.

    Normalises and (optionally) flips the batch, lets the objective perturb it, runs backbone and
    classifier under autocast, backpropagates the objective's loss (GradScaler under fp16), clips the
    backbone gradient and updates with fused optimizers, which skip the update on the device when the
    loss or gradients are not finite. The per-step generator is seeded from (seed, step, rank), so a
    resumed run draws the same augmentations.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        backbone_params: list[nn.Parameter],
        classifier: nn.Module,
        objective: Objective,
        optimizers: list[torch.optim.Optimizer],
        precision: str,
        dist_ctx: DistContext,
        scaler: torch.amp.GradScaler | None = None,
        clip_grad_norm: float | None,
        channels_last: bool,
        horizontal_flip: bool,
        seed: int,
        clip_classifier: bool = False,
        scaler_growth_interval: int = SCALER_GROWTH_INTERVAL,
    ) -> None:
        self.backbone = backbone
        self.backbone_params = backbone_params
        self.classifier = classifier
        self.objective = objective
        self.optimizers = optimizers
        self.ctx = dist_ctx
        self.device = dist_ctx.device
        self.precision = effective_precision(precision, self.device)
        self.autocast_dtype = AUTOCAST_DTYPES[self.precision]
        if scaler is not None and self.precision != "fp16":
            raise ValueError(f"a GradScaler is for fp16 steps, not {self.precision}")
        # `scaler`: one made with the other training parts (engine/build.py), so it exists before the step
        self.scaler = (
            scaler
            if scaler is not None
            else make_scaler(precision, self.device, growth_interval=scaler_growth_interval)
        )
        self.clip_grad_norm = clip_grad_norm
        self.clip_classifier = clip_classifier
        self.channels_last = channels_last
        self.horizontal_flip = horizontal_flip
        self.seed = seed
        self.generator = torch.Generator(device=self.device)
        for optimizer in optimizers:
            if not optimizer.defaults.get("fused"):
                raise ValueError("TrainStep needs fused optimizers (they skip bad steps on the device)")
            init_optimizer_state(optimizer)
        self.update_guard = UpdateGuard(optimizers, [backbone, classifier, objective], dist_ctx)

    def _inputs(self, images: torch.Tensor, step: int) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True))
        if self.horizontal_flip:
            flip = torch.rand(x.shape[0], device=self.device, generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _share_scaler_overflow(self, found_inf: torch.Tensor) -> None:
        """Make every optimizer on every rank see one overflow flag. GradScaler keeps a flag per optimizer
        and per rank; Partial FC's classifier shards differ per rank, so an overflow seen on one rank only
        would let the loss scales diverge and DDP would average gradients of different scales."""
        per_optimizer = [
            self.scaler._per_optimizer_states[id(opt)]["found_inf_per_device"] for opt in self.optimizers
        ]
        for flags in per_optimizer:
            for flag in flags.values():
                torch.maximum(found_inf, flag.reshape(()).to(found_inf.device), out=found_inf)
        all_reduce_max_(self.ctx, found_inf)
        for flags in per_optimizer:
            for flag in flags.values():
                flag.copy_(found_inf.reshape(flag.shape))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> StepResult:
        self.generator.manual_seed(step_seed(self.seed, step, self.ctx.rank))
        labels = labels.to(self.device, non_blocking=True)
        x = self._inputs(images, step)
        x_backbone, x_topology = self.objective.perturb(x, self.generator)
        if self.channels_last:
            x_backbone = x_backbone.contiguous(memory_format=torch.channels_last)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.update_guard.save()  # before the forward pass, which updates BatchNorm's running statistics

        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            embeddings = self.backbone(x_backbone)
            output = self.classifier(embeddings, labels)
        loss, terms = self.objective(
            x_topology=x_topology, embeddings=embeddings.float(), output=output, step=step
        )

        bad = (~torch.isfinite(loss.detach())).float()  # 0-dim, as fused optimizers expect
        all_reduce_max_(self.ctx, bad)  # every rank must skip together or DDP replicas drift apart
        grad_norm = self._backward(loss)
        found_inf = torch.maximum(bad, (~torch.isfinite(grad_norm)).float())
        self._update(found_inf)  # may raise found_inf in place (fp16 scaler overflow)
        bad_update = self.update_guard.undo_if_bad(bad)
        bad, skipped = torch.maximum(bad, bad_update), torch.maximum(found_inf, bad_update)
        return StepResult(
            loss=loss.detach(),
            bad=bad,
            skipped=skipped,
            grad_norm=grad_norm.detach(),
            terms={k: v.detach() for k, v in terms.items()},
        )

    def _backward(self, loss: torch.Tensor) -> torch.Tensor:
        """Gradients (unscaled, summed over ranks, clipped); returns the norm before clipping."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            for optimizer in self.optimizers:
                self.scaler.unscale_(optimizer)
        else:
            loss.backward()
        self.objective.synchronize_gradients()
        return self._clip_gradients()

    def _clip_gradients(self) -> torch.Tensor:
        """Clip to `clip_grad_norm`; returns the norm before clipping.

        Default: the backbone alone (as insightface; the classifier has its own optimizer and no cap).
        clip_classifier: backbone and classifier as one vector, as the reference does (its classifier
        weight is a backbone parameter; docs/method.md §2). Partial FC shards the classifier, so its
        squared norm is summed over ranks (a collective, not a host sync).
        """
        params = list(self.backbone_params)
        grad_norm = torch.nn.utils.get_total_norm(
            [p.grad for p in params if p.grad is not None], foreach=True
        )
        if self.clip_classifier:
            shard = [p for p in self.classifier.parameters() if p.grad is not None]
            shard_sq = torch.nn.utils.get_total_norm([p.grad for p in shard], foreach=True).square()
            grad_norm = (grad_norm.square() + all_reduce_sum_(self.ctx, shard_sq)).sqrt()
            params += shard
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.clip_grad_norm, grad_norm, foreach=True)
        return grad_norm

    def _update(self, found_inf: torch.Tensor) -> None:
        """Step every optimizer; on the device, each skips its update where `found_inf` is 1."""
        if self.scaler is not None:
            self._share_scaler_overflow(found_inf)
            for optimizer in self.optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
            return
        for optimizer in self.optimizers:
            optimizer.grad_scale = None
            optimizer.found_inf = found_inf
            optimizer.step()
