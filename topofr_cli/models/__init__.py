"""Backbones, margin heads and the sharded (Partial FC) classifier."""

from __future__ import annotations

from torch import nn

from topofr_cli.errors import TopofrError
from topofr_cli.models.heads import CombinedMarginHead
from topofr_cli.models.iresnet import STAGE_DEPTHS, build_iresnet
from topofr_cli.models.mobilefacenet import MobileFaceNet
from topofr_cli.models.partial_fc import ClassifierOutput, PartialFC

BACKBONE_NAMES = (*STAGE_DEPTHS, "mbf")


def create_backbone(
    name: str, embedding_size: int = 512, *, dropout: float = 0.0, gradient_checkpointing: bool = False
) -> nn.Module:
    """Build a face backbone: float [B, 3, 112, 112] in [-1, 1] -> embeddings [B, embedding_size].

    The output is the final BatchNorm1d, before L2 normalisation.
    """
    if name in STAGE_DEPTHS:
        return build_iresnet(
            name, embedding_size, dropout=dropout, gradient_checkpointing=gradient_checkpointing
        )
    if name == "mbf":
        # insightface's mbf has no dropout; a non-zero value is accepted and ignored there too.
        return MobileFaceNet(embedding_size, gradient_checkpointing=gradient_checkpointing)
    raise TopofrError(f"model.network: unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")


__all__ = ["BACKBONE_NAMES", "ClassifierOutput", "CombinedMarginHead", "PartialFC", "create_backbone"]
