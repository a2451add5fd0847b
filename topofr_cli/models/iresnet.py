"""IResNet backbones (r18 … r200) with insightface's layout and parameter names.

The module tree mirrors insightface `arcface_torch/backbones/iresnet.py` attribute for attribute
(docs/method.md §3.5), so a state dict saved by insightface, by the reference or by us loads into the others
unchanged. Only the forward pass adds features: per-stage gradient checkpointing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# docs/method.md §3.5: blocks per stage.
STAGE_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5
# 112 px input halved by the four stride-2 stages.
FINAL_SPATIAL = 7


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN → conv → BN → PReLU → conv(stride) → BN, plus the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def _make_stage(in_channels: int, channels: int, depth: int) -> nn.Sequential:
    # Every stage starts with stride 2 (so even layer1 has a projection shortcut, as in insightface).
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=1, stride=2, bias=False),
        nn.BatchNorm2d(channels, eps=BN_EPS),
    )
    blocks = [IBasicBlock(in_channels, channels, 2, downsample)]
    blocks += [IBasicBlock(channels, channels, 1, None) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


@contextlib.contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Run a training-mode forward without touching BatchNorm running statistics.

    Checkpointing recomputes a stage's forward during backward; without this the running mean and
    variance would be updated twice per step and drift from a non-checkpointed run.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms
    ]
    for m in norms:
        m.momentum = 0.0  # the running update becomes (1 − 0)·running + 0·batch = running
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def run_stages(stages: Iterable[nn.Module], x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """Apply `stages` in order; with `checkpointed`, each keeps only its input for backward and is
    recomputed there (with its BatchNorm statistics frozen, so they are updated once per step)."""
    for stage in stages:
        if checkpointed:
            x = checkpoint(
                stage,
                x,
                use_reentrant=False,
                context_fn=lambda stage=stage: (contextlib.nullcontext(), frozen_batchnorm_statistics(stage)),
            )
        else:
            x = stage(x)
    return x


class IResNet(nn.Module):
    """insightface IResNet: 3×3 stem (64 ch, stride 1), four stride-2 stages, BN → FC → BN1d head.

    float [B, 3, 112, 112] in [-1, 1] → embeddings [B, E], not L2-normalised. `depths` are the blocks
    per stage (r50: 3, 4, 14, 3); `create_backbone("r50")` and friends build the standard ones, and
    parameter names match insightface's so its checkpoints load directly.
    """

    def __init__(
        self,
        depths: tuple[int, int, int, int],
        embedding_size: int = 512,
        *,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        trainable_embedding_scale: bool = False,
    ):
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        self.trainable_embedding_scale = trainable_embedding_scale
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (channels, depth) in enumerate(zip(STAGE_WIDTHS, depths, strict=True), start=1):
            setattr(self, f"layer{index}", _make_stage(in_channels, channels, depth))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(STAGE_WIDTHS[-1], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(STAGE_WIDTHS[-1] * FINAL_SPATIAL * FINAL_SPATIAL, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self._initialise()

    def _initialise(self) -> None:
        # insightface's initialisation: N(0, 0.1) convolutions, identity BatchNorms.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The embedding BatchNorm's scale is fixed at 1 in insightface (a pure standardisation + shift).
        # The reference leaves it trainable (its freeze line is commented out): `trainable_embedding_scale`
        # reproduces that for compat "reference" (docs/method.md §2).
        self.features.weight.requires_grad_(self.trainable_embedding_scale)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        x = run_stages(self.stages, x, use_checkpoint)
        x = self.dropout(self.bn2(x))
        x = self.fc(torch.flatten(x, 1))
        return self.features(x)


def build_iresnet(
    name: str,
    embedding_size: int = 512,
    *,
    dropout: float = 0.0,
    gradient_checkpointing: bool = False,
    trainable_embedding_scale: bool = False,
) -> IResNet:
    return IResNet(
        STAGE_DEPTHS[name],
        embedding_size,
        dropout=dropout,
        gradient_checkpointing=gradient_checkpointing,
        trainable_embedding_scale=trainable_embedding_scale,
    )


# -- foreign checkpoints (insightface, the reference): their key names are this module's own -------------------
_STAGE_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")
EMBEDDING_KEY = "features.weight"  # the final BatchNorm1d: [embedding_size]


def stage_depths_of(state: Mapping[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """Blocks per stage in an IResNet state dict (zeros when it has no `layerN.i.` keys)."""
    depth = [0, 0, 0, 0]
    for key in state:
        match = _STAGE_BLOCK_KEY.match(key)
        if match:
            stage, block = int(match.group(1)) - 1, int(match.group(2))
            depth[stage] = max(depth[stage], block + 1)
    return depth[0], depth[1], depth[2], depth[3]


def network_of(state: Mapping[str, torch.Tensor]) -> str | None:
    """r18 … r200 whose stage depths the state dict has, else None."""
    depths = stage_depths_of(state)
    return next((name for name, stages in STAGE_DEPTHS.items() if stages == depths), None)


def embedding_size_of(state: Mapping[str, torch.Tensor]) -> int | None:
    tensor = state.get(EMBEDDING_KEY)
    return int(tensor.shape[0]) if tensor is not None else None


def checkpoint_filter_fn(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An insightface or reference IResNet state dict in this module's key names.

    They are the same names (the module tree mirrors insightface's), except the `module.` prefix
    that DistributedDataParallel adds to every key when a wrapped model is saved."""
    return strip_ddp_prefix(state)


def strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)
