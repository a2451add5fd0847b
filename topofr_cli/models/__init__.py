"""Backbones, margin heads and the sharded (Partial FC) classifier."""

from __future__ import annotations

from torch import nn

from topofr_cli.errors import TopofrError
from topofr_cli.models import iresnet, mobilefacenet
from topofr_cli.models.heads import CombinedMarginHead
from topofr_cli.models.iresnet import STAGE_DEPTHS, build_iresnet
from topofr_cli.models.mobilefacenet import MobileFaceNet
from topofr_cli.models.partial_fc import ClassifierOutput, PartialFC

BACKBONE_NAMES = (*STAGE_DEPTHS, "mbf")


def create_backbone(
    name: str,
    embedding_size: int = 512,
    *,
    dropout: float = 0.0,
    gradient_checkpointing: bool = False,
    trainable_embedding_scale: bool = False,
) -> nn.Module:
    """Build a face backbone: float [B, 3, 112, 112] in [-1, 1] -> embeddings [B, embedding_size].

    The output is the final BatchNorm1d, before L2 normalisation. `trainable_embedding_scale`
    unfreezes IResNet's embedding BatchNorm weight (the reference's choice; insightface freezes it).
    MobileFaceNet's is trainable either way, as in insightface and the reference.
    """
    if name in STAGE_DEPTHS:
        return build_iresnet(
            name,
            embedding_size,
            dropout=dropout,
            gradient_checkpointing=gradient_checkpointing,
            trainable_embedding_scale=trainable_embedding_scale,
        )
    if name == "mbf":
        # insightface's mbf has no dropout; a non-zero value is accepted and ignored there too.
        return MobileFaceNet(embedding_size, gradient_checkpointing=gradient_checkpointing)
    raise TopofrError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")


def checkpoint_filter_fn(state: dict, network: str) -> dict:
    """A foreign (insightface, the reference) state dict of `network` in our key names (see each model's own)."""
    module = mobilefacenet if network == "mbf" else iresnet
    return module.checkpoint_filter_fn(state)


def embedding_size_of(state: dict, network: str) -> int | None:
    """The embedding size a state dict of `network` produces (None if its embedding layer is missing)."""
    module = mobilefacenet if network == "mbf" else iresnet
    return module.embedding_size_of(state)


def embedding_key(network: str) -> str:
    return (mobilefacenet if network == "mbf" else iresnet).EMBEDDING_KEY


__all__ = [
    "BACKBONE_NAMES",
    "ClassifierOutput",
    "CombinedMarginHead",
    "PartialFC",
    "checkpoint_filter_fn",
    "create_backbone",
    "embedding_key",
    "embedding_size_of",
]
