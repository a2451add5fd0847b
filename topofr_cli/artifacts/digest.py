"""sha256 digests: of a checkpoint's content (its tensors and values, not the bytes of the file), and of a file.

The digest is computed over the payload before `torch.save` and again after `torch.load`, so it does
not depend on how torch lays out the file, only on what the file holds: every tensor's dtype, shape and
raw bytes and every value, walked in the payload's own order, each tagged with its type (1, 1.0 and
True differ). One flipped bit in tensor data, a changed number, a renamed key: a different digest.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import torch

ALGORITHM = "sha256"


def _update(hasher: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
        hasher.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        hasher.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _update(hasher, key)
            _update(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for item in value:
            _update(hasher, item)
    elif isinstance(value, bool) or value is None:
        hasher.update(f"B{value}".encode())
    elif isinstance(value, int):
        hasher.update(f"I{value};".encode())
    elif isinstance(value, float):
        hasher.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        hasher.update(f"S{len(data)};".encode() + data)
    elif isinstance(value, bytes):
        hasher.update(f"Y{len(value)};".encode() + value)
    else:  # what weights_only loading allows besides: torch.Size, dtype, device, complex, ...
        text = f"{type(value).__name__}:{value!r}".encode()
        hasher.update(f"O{len(text)};".encode() + text)


def content_digest(payload: Any) -> str:
    """The hex sha256 of `payload`'s content (see the module docstring)."""
    hasher = hashlib.sha256()
    _update(hasher, payload)
    return hasher.hexdigest()


def file_sha256(path: Any, chunk_bytes: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes (what `sha256sum` prints): names the exact weights a run started from."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            hasher.update(chunk)
    return hasher.hexdigest()
