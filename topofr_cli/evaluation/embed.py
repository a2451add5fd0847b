"""Run a backbone over batches of uint8 images: flip-summed embeddings, streamed to the host in chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from topofr_cli.data.loader import normalize
from topofr_cli.errors import TopofrError

# Batches are gathered on the device and copied to the host this many at a time: one host-device
# sync per chunk instead of one per batch, with device memory bounded by the chunk.
BATCHES_PER_HOST_COPY = 16


def to_model_input(images_uint8: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 [B, 3, H, W] → float [-1, 1] on `device` (docs/method.md §1); the copy moves uint8, 4× less."""
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


def flip_sum(backbone: Any, x: torch.Tensor, *, flip: bool) -> torch.Tensor:
    """Embeddings [B, E] of a model-input batch; with `flip`, embedding(x) + embedding(mirror x) (§3.3)."""
    if not flip:
        return backbone(x).float()
    both = backbone(torch.cat([x, torch.flip(x, dims=[3])])).float()
    return both[: len(x)] + both[len(x) :]


@torch.inference_mode()
def embed_batch(backbone: Any, images_uint8: torch.Tensor, *, flip: bool, device) -> torch.Tensor:
    """Embeddings [B, E] of one uint8 batch, flip-summed when `flip`."""
    return flip_sum(backbone, to_model_input(images_uint8, device), flip=flip)


def stream_embeddings(
    backbone: Any,
    batches: Iterable[Any],
    *,
    flip: bool = True,
    device="cpu",
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


def embed_images(
    backbone: Any, batches_of_uint8: Iterable[Any], *, flip: bool = True, device="cpu"
) -> np.ndarray:
    """All embeddings float32 [N, E] of uint8 batches [B, 3, H, W] (or loader tuples), in order."""
    chunks = list(stream_embeddings(backbone, batches_of_uint8, flip=flip, device=device))
    if not chunks:
        raise ValueError("embed_images: no batches to embed")
    return np.concatenate(chunks).astype(np.float32, copy=False)


FACE_SIZE = 112


def _as_face_batch(images: Any) -> torch.Tensor:
    """A tensor [N, 3, 112, 112] from an array or tensor, channels first or last, with or without N."""
    batch = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(batch, torch.Tensor):
        raise TopofrError(
            f"embed: expected a torch tensor or numpy array of images, got {type(images).__name__}"
        )
    if batch.dim() == 3:
        batch = batch.unsqueeze(0)
    if batch.dim() == 4 and batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    if batch.dim() != 4 or tuple(batch.shape[1:]) != (3, FACE_SIZE, FACE_SIZE):
        raise TopofrError(
            f"embed: expected aligned RGB faces [N, 3, 112, 112] or [N, 112, 112, 3], "
            f"got shape {tuple(images.shape)}"
        )
    return batch


def _model_input(chunk: torch.Tensor, device: torch.device, normalized: bool) -> torch.Tensor:
    if chunk.dtype == torch.uint8:
        return to_model_input(chunk, device)
    if not chunk.is_floating_point():
        raise TopofrError(f"embed: images must be uint8 or float, got {chunk.dtype}")
    x = chunk.to(device, torch.float32)
    low, high = (-1.0, 1.0) if normalized else (0.0, 1.0)
    if x.numel() and (x.min() < low or x.max() > high):  # one sync per chunk: a user-facing check
        hint = "" if normalized else " (pass normalized=True for images already in [-1, 1])"
        raise TopofrError(
            f"embed: float images must lie in [{low:g}, {high:g}]{hint}, got values in "
            f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    return x if normalized else x * 2.0 - 1.0


def embed(
    model: Any,
    images: Any,
    *,
    flip: bool = True,
    normalized: bool = False,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """L2-normalised face embeddings float32 [N, E] (on the CPU) of aligned 112×112 RGB face crops.

    `model`: what `load_model` returns, a backbone module (`create_backbone`), or an ONNX backbone.
    `images`: tensor or numpy array, [N, 3, 112, 112] or [N, 112, 112, 3] (one image may omit N),
    either uint8 0–255, or float in [0, 1] (torchvision's ToTensor), or float already in the model's
    [-1, 1] with `normalized=True`. Each image becomes (pixel / 255 − 0.5) / 0.5, is embedded together
    with its mirror image (the two embeddings summed, `flip=False` skips it; docs/method.md §3.3),
    and the result is L2-normalised: the cosine similarity of two faces is the dot product of rows.
    `device`: default the module's own device (CPU for ONNX). A module in training mode is put back in
    training mode afterwards.

    >>> import numpy as np
    >>> from topofr_cli import create_backbone, embed
    >>> backbone = create_backbone("mbf", embedding_size=64)
    >>> faces = np.random.default_rng(0).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    >>> z = embed(backbone, faces)
    >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=1), torch.ones(4)))
    ((4, 64), True)
    """
    from topofr_cli.evaluation.model_io import LoadedModel

    backbone = model.backbone if isinstance(model, LoadedModel) else model
    if batch_size < 1:
        raise TopofrError(f"embed: batch_size must be at least 1, got {batch_size}")
    batch = _as_face_batch(images)
    is_module = isinstance(backbone, torch.nn.Module)
    if device is None:
        first = next(backbone.parameters(), None) if is_module else None
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = is_module and backbone.training
    if is_module:
        backbone.to(device).eval()
    try:
        with torch.inference_mode():
            parts = [
                flip_sum(
                    backbone, _model_input(batch[start : start + batch_size], device, normalized), flip=flip
                ).cpu()
                for start in range(0, batch.shape[0], batch_size)
            ]
    finally:
        if was_training:
            backbone.train()
    return torch.nn.functional.normalize(torch.cat(parts), dim=1)
