"""MobileFaceNet ('mbf') in insightface's arcface_torch layout (width scale 2, blocks 1/4/6/2).

Module nesting and attribute names follow insightface's `backbones/mobilefacenet.py`, so its
`mbf` state dicts load here: `layers.{i}…`, `conv_sep…`, `features.layers.{0..3}…` (the GDC head:
7×7 depthwise conv + BN, flatten, bias-free linear, BatchNorm1d).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from topofr_cli.models.iresnet import run_stages, strip_ddp_prefix

Kernel = tuple[int, int]


class ConvBlock(nn.Module):
    """Conv → BN → PReLU; without the PReLU (`activation=False`) it is the linear projection that ends a
    bottleneck. Keys stay `layers.{0,1,2}` as in insightface either way."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel: Kernel = (1, 1),
        stride: Kernel = (1, 1),
        padding: Kernel = (0, 0),
        groups: int = 1,
        activation: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.PReLU(out_channels))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def LinearBlock(in_channels: int, out_channels: int, **kwargs) -> ConvBlock:  # noqa: N802 (reads as a layer)
    """Conv → BN with no non-linearity (the projection at the end of a bottleneck)."""
    return ConvBlock(in_channels, out_channels, activation=False, **kwargs)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand to `hidden` → depthwise 3×3 (stride) → 1×1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, *, residual: bool, stride: Kernel, hidden: int):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden),
            ConvBlock(hidden, hidden, kernel=(3, 3), stride=stride, padding=(1, 1), groups=hidden),
            LinearBlock(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """`depth` stride-1 residual bottlenecks at constant width."""

    def __init__(self, channels: int, depth: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            *[
                DepthWise(channels, channels, residual=True, stride=(1, 1), hidden=hidden)
                for _ in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution head: 7×7 depthwise conv + BN, then linear + BatchNorm1d."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=(7, 7), groups=512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """insightface's `mbf` face backbone: float [B, 3, 112, 112] in [-1, 1] → embeddings [B, E].

    Depth-wise separable blocks (`blocks` per stage, width × `scale`), a global depth-wise conv
    (GDC) and a BatchNorm1d embedding, not L2-normalised. Parameter names match insightface's, so
    its `mbf` checkpoints load directly. `create_backbone("mbf")` builds the standard one.
    """

    def __init__(
        self,
        embedding_size: int = 512,
        *,
        blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
        scale: int = 2,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.gradient_checkpointing = gradient_checkpointing
        narrow, wide = 64 * scale, 128 * scale
        stem_second = (
            ConvBlock(narrow, narrow, kernel=(3, 3), padding=(1, 1), groups=64)
            if blocks[0] == 1
            else Residual(narrow, blocks[0], hidden=128)
        )
        self.layers = nn.ModuleList(
            [
                ConvBlock(3, narrow, kernel=(3, 3), stride=(2, 2), padding=(1, 1)),  # 112 → 56
                stem_second,
                DepthWise(narrow, narrow, residual=False, stride=(2, 2), hidden=128),  # → 28
                Residual(narrow, blocks[1], hidden=128),
                DepthWise(narrow, wide, residual=False, stride=(2, 2), hidden=256),  # → 14
                Residual(wide, blocks[2], hidden=256),
                DepthWise(wide, wide, residual=False, stride=(2, 2), hidden=512),  # → 7
                Residual(wide, blocks[3], hidden=256),
            ]
        )
        self.conv_sep = ConvBlock(wide, 512)
        self.features = GDC(embedding_size)
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        x = run_stages(self.layers, x, use_checkpoint)
        return self.features(self.conv_sep(x))


# -- foreign checkpoints (insightface): their key names are this module's own ------------------------
MARKER_KEY = "conv_sep.layers.0.weight"  # a key only a MobileFaceNet state dict has
EMBEDDING_KEY = "features.layers.2.weight"  # the GDC head's linear layer: [embedding_size, 512]


def is_mobilefacenet_state(state: Mapping[str, torch.Tensor]) -> bool:
    return MARKER_KEY in state


def embedding_size_of(state: Mapping[str, torch.Tensor]) -> int | None:
    tensor = state.get(EMBEDDING_KEY)
    return int(tensor.shape[0]) if tensor is not None else None


def checkpoint_filter_fn(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An insightface `mbf` state dict in this module's key names (the same, less DDP's `module.`)."""
    return strip_ddp_prefix(state)
