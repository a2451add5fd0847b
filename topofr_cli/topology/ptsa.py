"""PTSA: the persistent-homology topology alignment loss between input and latent space (docs/method.md §1.2)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from topofr_cli.errors import TopofrError
from topofr_cli.topology.persistence import h0_pairs

__all__ = ["input_distances", "latent_distances", "ptsa_loss", "ptsa_from_distances", "PTSALoss", "FORMS"]

FORMS = ("official", "symmetric")


def input_distances(x: torch.Tensor, *, reference_arithmetic: bool = False) -> torch.Tensor:
    """A^X: pairwise L2 distances of the flattened inputs / sqrt(4 · numel per sample) (docs/method.md §1.2).

    reference_arithmetic=True computes them as the reference does (`compat: reference`): the norm of
    float32 differences, so near-tied MST edges order as they do there (docs/method.md §2).

    For images in [-1, 1] the divisor is the largest possible distance, so entries lie in [0, 1].
    Computed from a float64 Gram matrix (never a [B, B, D] difference tensor): float64 keeps the
    cancellation in |a|² + |b|² − 2⟨a, b⟩ far below float32 resolution. The result is exactly
    symmetric with an exact zero diagonal, in float32 (float64 if x is float64). No gradient.
    """
    if reference_arithmetic:
        return _reference_input_distances(x)
    with torch.no_grad():
        flat = x.detach().reshape(x.shape[0], -1)
        per_sample = flat.shape[1]
        flat = flat.to(torch.float64)
        flat = flat - flat.mean(
            dim=0, keepdim=True
        )  # distances are shift-invariant; smaller norms cancel less
        sq_norm = (flat * flat).sum(dim=1)
        sq = sq_norm.unsqueeze(1) + sq_norm.unsqueeze(0) - 2.0 * (flat @ flat.T)
        sq = sq.clamp_min(0.0)
        sq = 0.5 * (sq + sq.T)  # a + b == b + a in floating point, so this is exactly symmetric
        sq.fill_diagonal_(0.0)
        dist = sq.sqrt() / math.sqrt(4.0 * max(per_sample, 1))
        out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return dist.to(out_dtype)


# rows per chunk of compat mode's input distances (the reference implementation's arithmetic): its [B, B, D] difference tensor, a few rows at a time
_COMPAT_CHUNK_ELEMENTS = 1 << 24


def _reference_input_distances(x: torch.Tensor) -> torch.Tensor:
    """‖x_i − x_j‖ of float32 differences, reduced per pair as the reference's broadcast norm reduces it,
    a block of rows at a time instead of its whole B × B × D tensor (the same numbers, bounded memory)."""
    with torch.no_grad():
        flat = x.detach().reshape(x.shape[0], -1).float()
        batch, per_sample = flat.shape
        rows = max(1, _COMPAT_CHUNK_ELEMENTS // max(batch * per_sample, 1))
        blocks = [
            (flat[start : start + rows].unsqueeze(1) - flat.unsqueeze(0)).norm(dim=-1)
            for start in range(0, batch, rows)
        ]
        dist = torch.cat(blocks) if blocks else flat.new_zeros((0, 0))
        return dist / math.sqrt(4.0 * max(per_sample, 1))


def latent_distances(z: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """A^Z: pairwise L2 distances of the embeddings divided by the latent scale λ (docs/method.md §1.2).

    Uses cdist's direct-difference mode (no Gram cancellation: small distances stay accurate in
    float32, and the matrix is exactly symmetric with a zero diagonal). Its gradient at a zero
    distance (duplicate embeddings, the diagonal) is 0, not NaN. Differentiable in z and `scale`.
    """
    zf = z if z.dtype == torch.float64 else z.float()
    dist = torch.cdist(zf.unsqueeze(0), zf.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")[0]
    return dist / scale


def _check_inputs(x: torch.Tensor, z: torch.Tensor, form: str) -> None:
    if form not in FORMS:
        raise TopofrError(f"PTSA form: expected one of {', '.join(FORMS)}, got {form!r}")
    if z.dim() != 2:
        raise TopofrError(f"ptsa_loss: embeddings z must be [B, E], got shape {tuple(z.shape)}")
    if x.shape[0] != z.shape[0]:
        raise TopofrError(f"ptsa_loss: x has {x.shape[0]} samples but z has {z.shape[0]}")


def ptsa_loss(
    x: torch.Tensor,
    z: torch.Tensor,
    form: Literal["official", "symmetric"] = "official",
    latent_scale: float | torch.Tensor = 1.0,
    *,
    reference_arithmetic: bool = False,
) -> torch.Tensor:
    """The topology alignment loss of docs/method.md §1.2 as a scalar (divided by the batch size B).

    `x` is the *unperturbed* input batch (no gradient flows into it), `z` the embeddings [B, E].
    official:  Σ_k (A^X[π^X]_(k) − A^Z[π^Z]_(k))²  — k-th shortest MST edge of each space, rank by rank.
    symmetric: ‖A^X[π^X] − A^Z[π^X]‖² + ‖A^Z[π^Z] − A^X[π^Z]‖²  (Moor et al. 2020).
    No host–device synchronisation (the persistence pairs are computed on z's device).
    reference_arithmetic: input distances as the reference computes them (see `input_distances`).
    """
    _check_inputs(x, z, form)
    batch = z.shape[0]
    a_z = latent_distances(z, latent_scale)
    if batch < 2:
        return a_z.sum() * 0.0  # no edges; keeps the graph connected to z and the scale
    a_x = input_distances(x, reference_arithmetic=reference_arithmetic).to(device=a_z.device, dtype=a_z.dtype)
    pairs_x = h0_pairs(a_x, validate=False)
    # λ > 0 does not change the order of the edges, so the tree of A^Z is that of the raw distances.
    pairs_z = h0_pairs(a_z.detach(), validate=False)
    return ptsa_from_distances(a_x, pairs_x, a_z, pairs_z, form)


def ptsa_from_distances(
    a_x: torch.Tensor,
    pairs_x: torch.Tensor,
    a_z: torch.Tensor,
    pairs_z: torch.Tensor,
    form: Literal["official", "symmetric"] = "official",
) -> torch.Tensor:
    """The loss of docs/method.md §1.2 from distance matrices and their MST edges (sorted by length).

    official:  Σ_k (A^X[π^X]_(k) − A^Z[π^Z]_(k))²;  symmetric: ‖A^X[π^X] − A^Z[π^X]‖² + ‖A^Z[π^Z] − A^X[π^Z]‖².
    Both divided by the batch size B = a_z.shape[0].
    """
    batch = a_z.shape[0]
    if batch < 2:
        return a_z.sum() * 0.0
    a_x = a_x.to(a_z.dtype)
    xi, xj = pairs_x[:, 0], pairs_x[:, 1]
    zi, zj = pairs_z[:, 0], pairs_z[:, 1]
    if form == "official":
        loss = ((a_x[xi, xj] - a_z[zi, zj]) ** 2).sum()
    else:
        loss = ((a_x[xi, xj] - a_z[xi, xj]) ** 2).sum() + ((a_z[zi, zj] - a_x[zi, zj]) ** 2).sum()
    return loss / batch


class PTSALoss(nn.Module):
    """PTSA loss with its latent scale λ.

    learnable=True (the fixed default, docs/method.md §2 defect 3): λ = exp(log_scale) is a Parameter
    that the optimiser updates (positive by construction). learnable=False reproduces the reference: λ = 1.
    reference_arithmetic: the input distances in the reference's float32 arithmetic (compat: reference).
    """

    @classmethod
    def from_config(cls, form: str, compat: str) -> PTSALoss:
        """From a loss form and a compatibility mode ("reference" keeps the reference's fixed λ = 1)."""
        if compat not in ("fixed", "reference"):
            raise TopofrError(f"PTSA compatibility mode: expected one of fixed, reference, got {compat!r}")
        fixed = compat == "fixed"
        return cls(form, learnable=fixed, reference_arithmetic=not fixed)  # type: ignore[arg-type]

    def __init__(
        self,
        form: Literal["official", "symmetric"] = "official",
        learnable: bool = True,
        reference_arithmetic: bool = False,
    ) -> None:
        super().__init__()
        self.reference_arithmetic = reference_arithmetic
        if form not in FORMS:
            raise TopofrError(f"PTSA form: expected one of {', '.join(FORMS)}, got {form!r}")
        self.form = form
        self.learnable = learnable
        if learnable:
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_parameter("log_scale", None)

    @property
    def scale(self) -> torch.Tensor | float:
        """λ as a tensor (learnable) or the constant 1.0."""
        return self.log_scale.exp() if self.log_scale is not None else 1.0

    def latent_scale_value(self) -> float | None:
        """λ as a Python float for checkpoints (None when it is the fixed reference constant)."""
        return float(self.log_scale.detach().exp()) if self.log_scale is not None else None

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return ptsa_loss(
            x, z, form=self.form, latent_scale=self.scale, reference_arithmetic=self.reference_arithmetic
        )

    def extra_repr(self) -> str:
        return f"form={self.form!r}, learnable={self.learnable}, reference_arithmetic={self.reference_arithmetic}"
