"""Decode images in DataLoader workers and deliver uint8 batches, turning bad images into one-line errors.

An exception raised inside a DataLoader worker comes back to the main process wrapped in a
multi-line traceback. Workers here catch TopofrError, hand the message back with the batch, and the
main process raises it as the one line it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from topofr_cli.data.images import resize_rgb
from topofr_cli.errors import TopofrError

MODEL_INPUT_SIZE = 112


class GuardedImages(Dataset):
    """Item i = (uint8 [3, size, size], i, error message or ""), from `load(i) -> uint8 RGB [H, W, 3]`.

    `load` must raise TopofrError (message naming the file and record) for a bad image; it must be
    picklable (a top-level class instance or function) so workers can run it.
    """

    def __init__(self, load: Callable[[int], np.ndarray], length: int, size: int = MODEL_INPUT_SIZE):
        self.load = load
        self.length = length
        self.size = size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            rgb = resize_rgb(self.load(index), self.size, self.size)
        except TopofrError as exc:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), index, str(exc)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), index, ""


def iterate_batches(
    images: GuardedImages, *, batch_size: int, num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor]:
    """uint8 batches [B, 3, size, size] in index order; the first bad image raises its TopofrError."""
    loader = DataLoader(
        images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
    )
    for batch, _indices, errors in loader:
        if any(errors):
            raise TopofrError(next(message for message in errors if message))
        if on_images is not None:
            on_images(len(batch))
        yield batch
