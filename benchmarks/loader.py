"""Loader throughput: the packed format vs an insightface `.rec`, same images, side by side.

Makes a few thousand random smooth 112x112 JPEGs, writes them as a packed set and as a RecordIO set,
then times the train loader (decode on workers, uint8 batches) over each and prints images/s.

    python benchmarks/loader.py --images 3000 --workers 0 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from topofr_cli.data import open_dataset
from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.loader import make_train_loader
from topofr_cli.data.packed import PackedWriter
from topofr_cli.data.recordio import write_recordio


def smooth_faces(count: int, seed: int) -> list[bytes]:
    """Random low-frequency colour fields upsampled to 112x112: JPEG sizes close to real face crops."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(7, 7, 3), dtype=np.uint8)
        upsampled = np.asarray(Image.fromarray(coarse).resize((112, 112), Image.Resampling.BICUBIC))
        noisy = np.clip(upsampled + rng.normal(0, 6, upsampled.shape), 0, 255).astype(np.uint8)
        images.append(encode_jpeg(noisy, quality=90))
    return images


def time_loader(dataset, batch_size: int, workers: int, epochs: int) -> float:
    """Images per second over `epochs` passes, after one warm-up pass (worker start-up, page cache)."""
    loader = make_train_loader(dataset, batch_size, num_workers=workers, seed=0)
    for _ in loader:
        pass
    seen = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loader.sampler.set_epoch(epoch)
        for images, _labels in loader:
            seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="number of synthetic JPEGs")
    parser.add_argument("--identities", type=int, default=100, help="number of classes")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes per configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="topofr-loader-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        images = smooth_faces(args.images, seed=0)
        labels = [i % args.identities for i in range(args.images)]
        with PackedWriter(root / "packed", source="benchmark") as writer:
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                writer.add(image, label, str(i))
            writer.finish()
        (root / "rec").mkdir()
        write_recordio(root / "rec" / "train", images, labels, num_classes=args.identities)
        mean_kib = sum(map(len, images)) / len(images) / 1024
        console.print(
            f"{args.images} JPEGs (mean {mean_kib:.1f} KiB) written as packed + .rec in "
            f"{time.perf_counter() - started:.1f} s; batch {args.batch_size}, "
            f"torch threads 1, {torch.get_num_interop_threads()} interop"
        )

        table = Table(title="train loader throughput (images/s, uint8 [B, 3, 112, 112])")
        table.add_column("workers", justify="right")
        table.add_column("packed", justify="right")
        table.add_column(".rec", justify="right")
        table.add_column("packed / .rec", justify="right")
        datasets = {"packed": open_dataset(root / "packed"), "rec": open_dataset(root / "rec")}
        for workers in args.workers:
            rates = {
                name: time_loader(ds, args.batch_size, workers, args.epochs) for name, ds in datasets.items()
            }
            table.add_row(
                str(workers),
                f"{rates['packed']:,.0f}",
                f"{rates['rec']:,.0f}",
                f"{rates['packed'] / rates['rec']:.2f}x",
            )
        console.print(table)


if __name__ == "__main__":
    main()
