"""The one in-order loader for evaluation and scoring: uint8 batches at the model's input size.

Every consumer that embeds images in order (verification `.bin`s, IJB, `eval --data`, `hard-samples`)
reads through here, so the same set is read the same way: decoded in DataLoader workers and resized
to 112 × 112 (a no-op for sets already at that size).

An exception raised inside a DataLoader worker comes back to the main process wrapped in a
multi-line traceback. Workers here catch TopofrError, hand the message back with the batch, and the
main process raises it as the one line it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from topofr_cli.data.dataset import FaceDataset
from topofr_cli.data.images import resize_rgb
from topofr_cli.data.workers import clamp_workers, loader_jobs
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


class DatasetImages:
    """Picklable `load(i)` over a FaceDataset (its own errors already name the file and record)."""

    def __init__(self, dataset: FaceDataset):
        self.dataset = dataset

    def __call__(self, index: int) -> np.ndarray:
        return self.dataset[index][0]


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not oversubscribe the CPU with intra-op threads


def ordered_batches(
    images: GuardedImages,
    *,
    batch_size: int,
    num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 [B, 3, size, size], int64 indices [B]) in index order; the first bad image raises its error.
    Workers beyond the batches or the CPU cores are not started (`workers.clamp_workers`)."""
    num_workers, _ = clamp_workers(num_workers, loader_jobs(len(images), batch_size), "--workers")
    loader = DataLoader(
        images,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
    for batch, indices, errors in loader:
        if any(errors):
            raise TopofrError(next(message for message in errors if message))
        if on_images is not None:
            on_images(len(batch))
        yield batch, indices


def iterate_batches(
    images: GuardedImages,
    *,
    batch_size: int,
    num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor]:
    """The image batches of `ordered_batches` alone."""
    for batch, _ in ordered_batches(
        images, batch_size=batch_size, num_workers=num_workers, on_images=on_images
    ):
        yield batch


def dataset_batches(
    dataset: FaceDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(uint8 images, int64 labels, int64 indices) of every image of `dataset`, in order."""
    images = GuardedImages(DatasetImages(dataset), len(dataset))
    for batch, indices in ordered_batches(
        images, batch_size=batch_size, num_workers=num_workers, on_images=on_images
    ):
        yield batch, torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64)[indices.numpy()]), indices
