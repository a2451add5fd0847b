"""Run a backbone over batches of uint8 images: flip-summed embeddings, streamed to the host in chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from topofr_cli.data.loader import normalize

# Batches are gathered on the device and copied to the host this many at a time: one host-device
# sync per chunk instead of one per batch, with device memory bounded by the chunk.
BATCHES_PER_HOST_COPY = 16


def to_model_input(images_uint8: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float [-1, 1] on `device` (REFERENCE §1); the copy moves uint8, 4× less."""
    return normalize(images_uint8.to(device, non_blocking=True))


def _as_uint8_tensor(batch: Any) -> torch.Tensor:
    """Accept a tensor/array [B, 3, H, W] or a loader tuple whose first item is one."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected uint8 batches [B, 3, H, W], got {batch.dtype} {tuple(batch.shape)}")
    return batch


@torch.inference_mode()
def embed_batch(backbone: Any, images_uint8: torch.Tensor, *, flip: bool, device) -> torch.Tensor:
    """Embeddings [B, E] of one uint8 batch; with `flip`, embedding(x) + embedding(mirror x) (§3.3)."""
    x = to_model_input(images_uint8, device)
    if not flip:
        return backbone(x).float()
    both = backbone(torch.cat([x, torch.flip(x, dims=[3])])).float()
    return both[: len(x)] + both[len(x):]


def stream_embeddings(
    backbone: Any, batches: Iterable[Any], *, flip: bool = True, device="cpu",
    batches_per_copy: int = BATCHES_PER_HOST_COPY,
) -> Iterator[np.ndarray]:
    """Yield float32 [n, E] host arrays, in input order, each covering up to `batches_per_copy` batches.

    Embeddings are *not* L2-normalised: IJB scoring weights the raw norms (§3.4), and the
    verification protocol normalises itself.
    """
    device = torch.device(device)
    is_module = isinstance(backbone, torch.nn.Module)
    was_training = is_module and backbone.training
    if is_module:  # a model mid-training is put back in training mode afterwards
        backbone.to(device).eval()
    try:
        pending: list[torch.Tensor] = []
        for batch in batches:
            pending.append(embed_batch(backbone, _as_uint8_tensor(batch), flip=flip, device=device))
            if len(pending) >= batches_per_copy:
                yield torch.cat(pending).cpu().numpy()
                pending = []
        if pending:
            yield torch.cat(pending).cpu().numpy()
    finally:
        if was_training:
            backbone.train()


def embed_images(backbone: Any, batches_of_uint8: Iterable[Any], *, flip: bool = True, device="cpu") -> np.ndarray:
    """All embeddings float32 [N, E] of uint8 batches [B, 3, H, W] (or loader tuples), in order."""
    chunks = list(stream_embeddings(backbone, batches_of_uint8, flip=flip, device=device))
    if not chunks:
        raise ValueError("embed_images: no batches to embed")
    return np.concatenate(chunks).astype(np.float32, copy=False)
