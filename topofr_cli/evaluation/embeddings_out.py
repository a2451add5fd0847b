"""Embed a whole dataset to a `.parquet` or `.npy` file, streaming (never all embeddings in memory)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.data.ordered import DatasetImages, GuardedImages, iterate_batches
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.embed import stream_embeddings

FORMATS = (".parquet", ".npy")


@dataclass
class EmbeddingsReport:
    path: Path
    count: int
    embedding_size: int


class _ParquetSink:
    """Row groups of (index, label, source_key, embedding list<float32>)."""

    def __init__(self, tmp: Path, dataset: FaceDataset):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.pq = pa, pq
        self.tmp, self.dataset, self.writer = tmp, dataset, None
        self.labels = np.asarray(dataset.labels, dtype=np.int64)

    def write(self, start: int, chunk: np.ndarray) -> None:
        pa = self.pa
        stop = start + len(chunk)
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(chunk.reshape(-1), pa.float32()), chunk.shape[1]
        )
        table = pa.table(
            {
                "index": pa.array(np.arange(start, stop, dtype=np.int64)),
                "label": pa.array(self.labels[start:stop]),
                "source_key": pa.array([self.dataset.source_key(i) for i in range(start, stop)], pa.string()),
                "embedding": embedding.cast(pa.list_(pa.float32())),
            }
        )
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _NpySink:
    """A float32 [N, E] `.npy` filled in place through a memory map."""

    def __init__(self, tmp: Path, count: int):
        self.tmp, self.count, self.array = tmp, count, None

    def write(self, start: int, chunk: np.ndarray) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=np.float32, shape=(self.count, chunk.shape[1])
            )
        self.array[start : start + len(chunk)] = chunk

    def close(self) -> None:
        if self.array is not None:
            self.array.flush()
            self.array = None  # drops the memory map


def write_embeddings(
    backbone: Any,
    dataset: FaceDataset,
    out_path: str | Path,
    *,
    flip: bool = True,
    batch_size: int = 128,
    num_workers: int = 2,
    device="cpu",
    on_images: Callable[[int], None] | None = None,
) -> EmbeddingsReport:
    """Flip-summed, *not* L2-normalised embeddings of every image of `dataset`, in dataset order.

    `.parquet`: columns index, label, source_key, embedding (list of float32). `.npy`: float32 [N, E]
    (row i = dataset index i). Written to a temporary sibling and renamed when complete.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in FORMATS:
        raise TopofrError(f"{out_path}: --embeddings must end in {' or '.join(FORMATS)}")
    if len(dataset) == 0:
        raise TopofrError(f"{dataset.path}: the dataset has no images")
    images = GuardedImages(DatasetImages(dataset), len(dataset))
    batches = iterate_batches(images, batch_size=batch_size, num_workers=num_workers, on_images=on_images)
    written, embedding_size = 0, 0
    with atomic_path(out_path) as tmp:
        sink = (
            _ParquetSink(tmp, dataset)
            if out_path.suffix.lower() == ".parquet"
            else _NpySink(tmp, len(dataset))
        )
        try:
            for chunk in stream_embeddings(backbone, batches, flip=flip, device=device):
                sink.write(written, chunk)
                written += len(chunk)
                embedding_size = chunk.shape[1]
        finally:
            sink.close()
    return EmbeddingsReport(path=out_path, count=written, embedding_size=embedding_size)
