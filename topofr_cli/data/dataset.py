"""`FaceDataset`: what every dataset reader offers, and what the rest of the library may rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FaceDataset(Protocol):
    """What every dataset offers (docs/interfaces.md). Picklable; files reopen lazily per process."""

    path: Path
    labels: np.ndarray  # int64 [N]
    num_classes: int
    meta: dict[str, Any]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...  # (uint8 [H, W, 3] RGB, label)

    def encoded(self, index: int) -> bytes: ...

    def source_key(self, index: int) -> str: ...
