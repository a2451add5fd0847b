"""The training DataLoader: uint8 batches decoded on workers, normalised on the device.

The train sampler draws one permutation per (seed, epoch), the same on every rank, and gives each
rank a disjoint strided slice of it, so the order depends only on seed, epoch and world size.
Resuming mid-epoch skips whole batches by index arithmetic: skipped images are never decoded.
In-order reading for evaluation and scoring is `topofr_cli.data.ordered`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from topofr_cli.data.dataset import FaceDataset
from topofr_cli.data.workers import clamp_workers, loader_jobs
from topofr_cli.errors import TopofrError


class EpochBatchSampler(Sampler[list[int]]):
    """Yields this rank's batches of dataset indices for the current epoch.

    `len()` is the number of batches per epoch; it is 0 when the set is smaller than one batch per
    rank (callers report that with the dataset's name).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        # Every rank sees the same number of samples: wrap around (pad) rather than give ranks unequal work.
        self.samples_per_rank = -(-num_samples // world_size)
        if drop_last:
            self.batches_per_epoch = self.samples_per_rank // batch_size
        else:
            self.batches_per_epoch = -(-self.samples_per_rank // batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of `epoch`; also clears any pending `set_start_batch`."""
        self.epoch = epoch
        self.start_batch = 0

    def set_start_batch(self, batch: int) -> None:
        """Make the next iteration start at batch `batch` of the current epoch (used once, then reset)."""
        if not 0 <= batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {batch} outside 0..{self.batches_per_epoch}")
        self.start_batch = batch

    def epoch_indices(self) -> np.ndarray:
        """This rank's sample order for the current epoch (before batching)."""
        if self.shuffle:
            generator = np.random.default_rng([self.seed, self.epoch])
            order = generator.permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.samples_per_rank * self.world_size
        if total > self.num_samples:
            order = np.concatenate([order, order[: total - self.num_samples]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start_batch = self.start_batch, 0
        indices = self.epoch_indices()
        for batch in range(start, self.batches_per_epoch):
            yield indices[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch


class _Failure:
    """A TopofrError raised on a worker, carried back as data so the main process re-raises it as one line
    (DataLoader would otherwise wrap it with the worker's traceback)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Guarded:
    """Wraps a dataset so a bad record becomes a _Failure instead of an exception on the worker."""

    def __init__(self, dataset: FaceDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            image, label = self.dataset[index]
        except TopofrError as exc:
            return _Failure(str(exc))
        return image, label


class FaceLoader(DataLoader):
    """A DataLoader that re-raises data errors from workers as the original one-line TopofrError."""

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if isinstance(batch, _Failure):
                raise TopofrError(batch.message)
            yield batch


def _first_failure(items: Sequence[Any]) -> _Failure | None:
    return next((item for item in items if isinstance(item, _Failure)), None)


def _stack_images(images: Sequence[np.ndarray]) -> torch.Tensor:
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise TopofrError(
            f"images in one batch have different sizes {sorted(shapes)}; pack the set "
            f"at one size (e.g. `topofr prepare folder --landmarks`)"
        )
    stacked = torch.from_numpy(np.stack(images))  # [B, H, W, 3]
    return stacked.permute(0, 3, 1, 2).contiguous()


def collate_train(items: Sequence[Any]) -> Any:
    failure = _first_failure(items)
    if failure is not None:
        return failure
    images, labels = zip(*items, strict=True)
    return _stack_images(images), torch.tensor(labels, dtype=torch.int64)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in each worker from torch's per-worker seed (set from the loader generator)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.set_num_threads(1)  # decoding workers must not oversubscribe the CPU with intra-op threads


def _loader_options(num_workers: int) -> dict[str, Any]:
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": torch.cuda.is_available()}
    if num_workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=seed_worker)
    return options


def make_train_loader(
    dataset: FaceDataset,
    batch_size: int,
    *,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> FaceLoader:
    """Shuffled, epoch-seeded, rank-sharded loader of `(uint8 [B, 3, H, W], int64 [B])`.

    `loader.sampler` is the EpochBatchSampler (`set_epoch`, `set_start_batch`). `num_workers` is
    capped at the batches of one epoch and the CPU cores (`workers.clamp_workers`); `loader.note`
    says so when it bites (None otherwise).
    """
    batches = loader_jobs(len(dataset) // max(1, world_size), batch_size)
    num_workers, note = clamp_workers(num_workers, batches, "data.num_workers", "batches per epoch")
    batch_sampler = EpochBatchSampler(
        len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last
    )
    generator = torch.Generator().manual_seed(seed * 1000 + rank)
    loader = FaceLoader(
        _Guarded(dataset),
        batch_sampler=batch_sampler,
        collate_fn=collate_train,
        generator=generator,
        **_loader_options(num_workers),
    )
    # DataLoader.sampler is its internal SequentialSampler when a batch_sampler is given; expose ours.
    loader.__dict__["sampler"] = batch_sampler
    loader.note = note
    return loader


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] → [-1, 1] as (pixel / 255 − 0.5) / 0.5 (docs/method.md §1), on the tensor's device."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    return images.to(dtype).div_(255.0).sub_(0.5).div_(0.5)
