"""Combined angular-margin head: s · (cos(m1·θ + m2) − m3) on the true class, s · cos θ elsewhere.

ArcFace is (m1, m2, m3) = (1, 0.5, 0), CosFace (1, 0, 0.35), SphereFace-style m1 > 1 (docs/method.md §1.3).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from topofr_cli.errors import TopofrError

# docs/method.md §2 defect 5: d/dc arccos(c) = −1/√(1 − c²) is infinite at |c| = 1, so cosines are kept
# strictly inside (−1, 1). 1e-6 is far above fp32 spacing near 1 (6e-8) and caps |gradient| at ~700.
COSINE_EPS = 1e-6


class CombinedMarginHead(nn.Module):
    """`(cosine [B, C], labels [B]) -> logits [B, C]` (float32).

    Label −1 means the row's true class is not among these C columns (another Partial FC shard):
    that row gets no margin. The margin is computed in float32 with autocast disabled, whatever the
    cosine's dtype, because fp16 arccos near ±1 loses all precision.
    """

    def __init__(self, scale: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0):
        super().__init__()
        if scale <= 0 or m1 < 1 or m2 < 0 or m2 >= math.pi or m3 < 0:
            raise TopofrError(
                f"head: invalid margin parameters scale={scale} m1={m1} m2={m2} m3={m3} "
                "(need scale > 0, m1 >= 1, 0 <= m2 < pi, m3 >= 0)"
            )
        self.scale = float(scale)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)
        # Past θ* = (π − m2)/m1 the angle m1·θ + m2 wraps beyond π and cos(·) would rise again,
        # rewarding a *worse* angle. Beyond θ* we use insightface's ArcFace fallback
        # cos θ − m2·sin(π − m2) (its threshold / non-easy-margin branch). That keeps the logit
        # monotone decreasing in θ only while the shift is at least 1 + cos θ* (the gap between
        # the branches at θ*); it is for ArcFace-sized margins, and otherwise (large m2, or m1 > 1)
        # we shift by 1 + cos θ* instead, which joins the branches continuously.
        self.threshold_angle = (math.pi - self.m2) / self.m1
        self.fallback_shift = max(self.m2 * math.sin(math.pi - self.m2), 1.0 + math.cos(self.threshold_angle))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, m1={self.m1}, m2={self.m2}, m3={self.m3}"

    def target_logit(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """The unscaled margin logit for the true class given its (clamped, fp32) cosine."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos_theta - self.m3  # CosFace: no angle needed
        theta = torch.acos(cos_theta)
        with_margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        fallback = cos_theta - self.fallback_shift - self.m3
        return torch.where(theta <= self.threshold_angle, with_margin, fallback)

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cos = cosine.float().clamp(-1.0 + COSINE_EPS, 1.0 - COSINE_EPS)
            has_target = (labels >= 0).unsqueeze(1)
            # Rows with label −1 gather column 0 and write it back unchanged: no data-dependent
            # indexing, so no host–device synchronisation.
            column = labels.clamp(min=0).unsqueeze(1)
            true_cos = cos.gather(1, column)
            margin = torch.where(has_target, self.target_logit(true_cos), true_cos)
            return cos.scatter(1, column, margin) * self.scale
