"""The TopoFR objective (docs/method.md §1): L = L_cls (SDE-weighted) + α · L_topo (PTSA), inputs perturbed by RSP.

Modes (`topofr.compat`):
- `fixed` (default): w2 = 1 − p_gt as a float, PTSA's input space is the clean batch x, λ is learned.
- `reference`: the reference's arithmetic, defects 1–3 of docs/method.md §2 included: w2 truncated to an integer
  after p_gt is rounded to the autocast dtype (a gate at p_gt ≥ 0.99976 under fp16), randomly erased
  samples leak into the input space x, λ fixed at 1, one GUM per rank's local batch, the entropy
  The reference's negation pattern for odd batches. (The engine side of reference mode — trainable embedding
  BatchNorm scale, joint clipping, scaler growth interval — is in engine/compat.py.)

Distributed semantics (the engine sums backbone gradients over ranks, see distributed.sum_gradients_hook):
L_cls is over the global batch on every rank (Partial FC), so it needs nothing more. A local-scope
L_topo is per rank; its objective is the mean over ranks, so its backward term is divided by the world
size and λ's gradient is summed over ranks. A global-scope L_topo is computed identically on every
rank over the gathered batch, with gradient flowing into each rank's own embeddings only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from topofr_cli.augment.rsp import OPS, RandomStructurePerturbation
from topofr_cli.config import TopoFRConfig
from topofr_cli.data.loader import normalize
from topofr_cli.hardness.sds import sde_weights
from topofr_cli.models.distributed_ops import gather_parts
from topofr_cli.topology.ptsa import PTSALoss

ERASING = OPS.index("erasing")


def gather_with_local_grad(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's rows in rank order; only this rank's rows carry gradient (the others are copies)."""
    if world_size == 1:
        return tensor
    parts = gather_parts(tensor.detach())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def pixels_of(x: torch.Tensor) -> torch.Tensor:
    """The uint8 images u with normalize(u) == x, for x made by `normalize` (and flips of it): the
    inverse map is off by < 1e-4 of a grey level, so rounding recovers u exactly."""
    return (x.float() * 127.5 + 127.5).round_().clamp_(0, 255).to(torch.uint8)


def gather_input_space(x: torch.Tensor, world_size: int, *, from_pixels: bool) -> torch.Tensor:
    """Every rank's PTSA input batch in rank order (it needs no gradient).

    from_pixels: x is normalize(uint8 images), so the ranks exchange the uint8 images (4× fewer bytes
    than float32) and each normalises the others' again: bit-identical to gathering x itself.
    The reference's input space (compat=reference) can hold erased samples, which are not pixels: sent as float32.
    """
    if world_size == 1:
        return x
    if not from_pixels:
        return gather_with_local_grad(x.float(), world_size)
    parts = [normalize(part) for part in gather_parts(pixels_of(x))]
    parts[dist.get_rank()] = x.float()
    return torch.cat(parts, dim=0)


class TopoFRObjective(nn.Module):
    """What a TopoFR training step minimises: SDE-weighted classification loss plus α · PTSA.

    Built from the recipe's `topofr` section. The step calls `perturb(x, generator)` for the backbone's
    input (RSP) and PTSA's input space, then `forward(x_topology=, embeddings=, output=, step=)` with
    the classifier's `ClassifierOutput`; it returns (loss, detached terms named in `term_names`). Its
    one parameter is PTSA's latent scale λ (fixed mode). For a loop of your own, `TopoFRLoss` wraps it.
    """

    def __init__(
        self, config: TopoFRConfig, *, world_size: int = 1, autocast_dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.world_size = world_size
        self.reference = config.compat == "reference"
        # Reference mode rounds p_gt to the dtype the reference's softmax ran in before its integer cast.
        self.softmax_dtype = autocast_dtype if self.reference else None
        # Reference mode fits one GUM per rank's local batch (the reference has no Partial FC: each process
        # scores its own batch); fixed mode fits one over the global batch that every rank holds.
        self.gum_groups = world_size if self.reference else 1
        self.rsp = RandomStructurePerturbation(config.rsp.prob) if config.rsp.enabled else None
        self.ptsa = PTSALoss.from_config(config.ptsa.form, config.compat) if config.ptsa.enabled else None
        names = ["loss_cls"]
        if self.ptsa is not None:
            names.append("loss_topo")
            if self.ptsa.learnable:
                names.append("latent_scale")
        if config.sde.enabled:
            names += ["gum_pi", "gamma_mean", "sds_mean"]
        self.term_names = tuple(names)

    # -- the step's hooks ----------------------------------------------------------------------------
    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone input x̃ = RSP(x), PTSA's input space): x itself, or the reference's leaky version."""
        if self.rsp is None:
            return x, x
        if not self.reference:
            return self.rsp(x, generator)[0], x
        # Defect 2: the reference erases in place on a view of the batch, so erased samples (only those) reach the
        # input space. Re-draw the same numbers from a copy of the generator to know which were erased.
        replay = torch.Generator(device=generator.device)
        replay.set_state(generator.get_state())
        x_tilde, _ = self.rsp(x, generator)
        params = self.rsp.draw(x.shape[0], x.device, replay)
        erased = params["selected"] & (params["op"] == ERASING)
        return x_tilde, torch.where(erased[:, None, None, None], x_tilde, x)

    def synchronize_gradients(self) -> None:
        """λ lives outside DDP: sum its (world-size-scaled) local-scope gradient over ranks."""
        if self.world_size == 1 or self.ptsa is None or self.config.ptsa.scope == "global":
            return
        for param in self.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)

    def forward(
        self, *, x_topology: torch.Tensor, embeddings: torch.Tensor, output: Any, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = output.ce.float()
        terms: dict[str, torch.Tensor] = {}
        if self.config.sde.enabled:
            # docs/method.md §1.3: L_cls = mean(w1 · w2 · CE) over the global batch.
            w1, w2, gum = sde_weights(
                output.entropy,
                output.p_true,
                self.config.sde.temperature,
                self.config.compat,
                groups=self.gum_groups,
                softmax_dtype=self.softmax_dtype,
            )
            sds = (w1 * w2).to(ce.dtype)
            loss_cls = (sds * ce).mean()
            terms.update(gum_pi=gum.pi.mean(), gamma_mean=gum.gamma.mean(), sds_mean=sds.mean())
        else:
            loss_cls = ce.mean()
        terms["loss_cls"] = loss_cls.detach()
        loss = loss_cls
        if self.ptsa is not None:
            alpha = self.config.ptsa.alpha
            if self.config.ptsa.scope == "global" and self.world_size > 1:
                z = gather_with_local_grad(embeddings, self.world_size)
                x = gather_input_space(x_topology, self.world_size, from_pixels=not self.reference)
                loss_topo = self.ptsa(x, z)
                loss = loss + alpha * loss_topo
            else:
                loss_topo = self.ptsa(x_topology, embeddings)
                loss = loss + (alpha / self.world_size) * loss_topo
            terms["loss_topo"] = loss_topo.detach()
            if self.ptsa.learnable:
                terms["latent_scale"] = self.ptsa.scale.detach()
        return loss, terms
