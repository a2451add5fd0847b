"""The packed dataset format: encoded images in a few large shard files, an index, and meta.json.

Layout of a packed directory:
  images-00000.shard ...  encoded images back to back (bytes exactly as given to `add`)
  index.parquet           one row per image: shard (int32), offset (int64), length (int64),
                          label (int64), key (string: where the image came from)
  meta.json               format "topofr-packed", num_images, num_classes, image_size [H, W]
                          (null if sizes vary), source, topofr_version, plus writer extras
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from topofr_cli import __version__
from topofr_cli.artifacts.atomic import StagedDir, os_errors_named, write_json
from topofr_cli.artifacts.outputs import DATASET, check_output
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.data.images import ImageDecodeError, decode_image, image_size
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, track

FORMAT_NAME = "topofr-packed"
META_FILE = "meta.json"
INDEX_FILE = "index.parquet"
DEFAULT_SHARD_BYTES = 4 << 30


def shard_name(number: int) -> str:
    return f"images-{number:05d}.shard"


def is_packed_dir(path: str | Path) -> bool:
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_bytes()).get("format") == FORMAT_NAME
    except (ValueError, OSError, AttributeError, RecursionError):  # a damaged meta.json is reported on open
        return False


class PackedWriter:
    """Write a packed dataset into a staged sibling folder, moved onto `out_dir` by `finish`."""

    def __init__(
        self,
        out_dir: str | Path,
        source: str,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        overwrite: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.source = source
        self.shard_bytes = shard_bytes
        self.overwrite = overwrite
        check_output(self.out_dir, DATASET, overwrite=overwrite)
        self._staged = StagedDir(self.out_dir)
        self.tmp_dir = self._staged.path
        self._shard_number = 0
        self._shard_file = open(self.tmp_dir / shard_name(0), "wb")  # noqa: SIM115 - closed in finish/abort
        self._shard_used = 0
        self._shards: list[int] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._labels: list[int] = []
        self._keys: list[str] = []
        self._sizes: set[tuple[int, int]] = set()
        self._finished = False

    def __enter__(self) -> PackedWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._finished:
            self.abort()

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, encoded: bytes, label: int, key: str) -> None:
        """Append one encoded image (stored byte for byte) with its class id and source key."""
        if label < 0:
            raise TopofrError(f"{self.source}: {key}: negative label {label}")
        try:
            self._sizes.add(image_size(encoded))
        except ImageDecodeError as exc:
            raise TopofrError(f"{self.source}: {key}: {exc}") from None
        with os_errors_named(self.out_dir):
            self._write_shard(encoded)
        self._shards.append(self._shard_number)
        self._offsets.append(self._shard_used)
        self._lengths.append(len(encoded))
        self._labels.append(int(label))
        self._keys.append(key)
        self._shard_used += len(encoded)

    def _write_shard(self, encoded: bytes) -> None:
        if self._shard_used > 0 and self._shard_used + len(encoded) > self.shard_bytes:
            self._shard_file.close()
            self._shard_number += 1
            self._shard_file = open(self.tmp_dir / shard_name(self._shard_number), "wb")  # noqa: SIM115
            self._shard_used = 0
        self._shard_file.write(encoded)

    def finish(self, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write index and meta.json, then rename the temp directory onto `out_dir`."""
        with os_errors_named(self.out_dir):
            return self._finish(extra_meta)

    def _finish(self, extra_meta: dict[str, Any] | None) -> Path:
        self._shard_file.close()
        if not self._labels:
            raise TopofrError(f"{self.source}: no images to pack")
        labels = np.asarray(self._labels, dtype=np.int64)
        extra = dict(extra_meta or {})
        num_classes = int(extra.pop("num_classes", None) or labels.max() + 1)
        if labels.max() >= num_classes:
            bad = int(np.argmax(labels >= num_classes))
            raise TopofrError(
                f"{self.source}: {self._keys[bad]}: label {labels[bad]} out of range "
                f"(num_classes {num_classes})"
            )
        table = pa.table(
            {
                "shard": pa.array(self._shards, type=pa.int32()),
                "offset": pa.array(self._offsets, type=pa.int64()),
                "length": pa.array(self._lengths, type=pa.int64()),
                "label": pa.array(labels, type=pa.int64()),
                "key": pa.array(self._keys, type=pa.string()),
            }
        )
        pq.write_table(table, self.tmp_dir / INDEX_FILE)
        sizes = sorted(self._sizes)
        meta = {
            "format": FORMAT_NAME,
            "num_images": len(labels),
            "num_classes": num_classes,
            "image_size": list(sizes[0]) if len(sizes) == 1 else None,
            "num_shards": self._shard_number + 1,
            "source": self.source,
            "topofr_version": __version__,
        }
        meta.update(extra)
        write_json(self.tmp_dir / META_FILE, meta)
        self._staged.commit(replace=self.overwrite)
        self._finished = True
        return self.out_dir

    def abort(self) -> None:
        """Drop everything written so far; never raises again (a full disk fails the close as well)."""
        try:
            self._shard_file.close()
        except OSError:
            pass  # the error that led here is the one to report
        self._staged.discard()
        self._finished = True


_INDEX_COLUMNS = {
    "shard": pa.types.is_integer,
    "offset": pa.types.is_integer,
    "length": pa.types.is_integer,
    "label": pa.types.is_integer,
    "key": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
}


def read_meta(meta_path: Path) -> dict[str, Any]:
    """meta.json of a packed directory, with the keys the reader relies on checked."""
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        raise TopofrError(f"{meta_path}: missing (not a packed dataset)") from None
    except OSError as exc:
        raise TopofrError(f"{meta_path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TopofrError(f"{meta_path}: not UTF-8 text") from None
    except (
        ValueError,
        RecursionError,
    ) as exc:  # JSONDecodeError is a ValueError; RecursionError: deep nesting
        raise TopofrError(f"{meta_path}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise TopofrError(f"{meta_path}: key 'format' is not '{FORMAT_NAME}'")
    for key in ("num_images", "num_classes"):
        value = meta.get(key)
        if type(value) is not int or not 1 <= value < 2**31:
            raise TopofrError(
                f"{meta_path}: key '{key}' must be an integer in [1, {2**31 - 1}], got {str(value)[:40]!r}"
            )
    return meta


def read_index(index_path: Path) -> dict[str, Any]:
    """index.parquet's columns (numeric ones as int64 arrays, `key` as arrow strings), types checked."""
    try:
        table = pq.read_table(index_path, columns=list(_INDEX_COLUMNS))
        for name, is_expected in _INDEX_COLUMNS.items():
            column = table[name]
            if not is_expected(column.type) or column.null_count:
                raise TopofrError(
                    f"{index_path}: column '{name}' has type {column.type} "
                    f"({column.null_count} nulls), expected {'string' if name == 'key' else 'integer'}"
                )
        columns: dict[str, Any] = {
            name: table[name].to_numpy().astype(np.int64) for name in _INDEX_COLUMNS if name != "key"
        }
        table["key"].validate(full=True)  # UTF-8 and offsets checked now, not when a key is first needed
        columns["key"] = table["key"]
    except FileNotFoundError:
        raise TopofrError(f"{index_path}: missing") from None
    except (pa.ArrowException, OSError, ValueError) as exc:  # damaged pages, bad UTF-8 in the key column
        raise TopofrError(
            f"{index_path}: unreadable index ({(str(exc).splitlines() or [''])[0][:200]})"
        ) from None
    return columns


class PackedDataset:
    """Random access to a packed directory. Shards are memory-mapped lazily in each process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path / META_FILE)
        index_path = self.path / INDEX_FILE
        columns = read_index(index_path)
        self._shard = columns["shard"].astype(np.int32)
        self._offset = columns["offset"]
        self._length = columns["length"]
        self.labels = columns["label"]
        self.num_classes = self.meta["num_classes"]
        self._validate(index_path)
        self._keys: pa.ChunkedArray | None = columns["key"]
        self._maps: dict[int, mmap.mmap] = {}
        self._pid = os.getpid()

    def _validate(self, index_path: Path) -> None:
        if len(self.labels) != self.meta["num_images"]:
            raise TopofrError(
                f"{index_path}: {len(self.labels)} rows but meta.json says "
                f"num_images {self.meta['num_images']}"
            )
        if len(self.labels) == 0:
            raise TopofrError(f"{index_path}: no images")
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= self.num_classes))
        if bad.size:
            raise TopofrError(
                f"{index_path}: row {bad[0]}: label {self.labels[bad[0]]} out of range "
                f"(num_classes {self.num_classes})"
            )
        negative = np.flatnonzero((self._offset < 0) | (self._length < 0) | (self._shard < 0))
        if negative.size:
            raise TopofrError(f"{index_path}: row {negative[0]}: negative shard, offset or length")
        for number in np.unique(self._shard):
            shard_path = self.path / shard_name(int(number))
            if not shard_path.is_file():
                raise TopofrError(f"{shard_path}: missing shard file")
            rows = self._shard == number
            # compare offset with size - length: offset + length can wrap past int64
            past = np.flatnonzero(self._offset[rows] > shard_path.stat().st_size - self._length[rows])
            if past.size:
                row = int(np.flatnonzero(rows)[past[0]])
                raise TopofrError(f"{index_path}: row {row}: offset+length past the end of {shard_path.name}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_keys"] = None
        return state

    def _shard_map(self, number: int) -> mmap.mmap:
        if self._pid != os.getpid():  # a forked worker: open its own maps
            self._maps = {}
            self._pid = os.getpid()
        shard_map = self._maps.get(number)
        if shard_map is None:
            with open(self.path / shard_name(number), "rb") as handle:
                shard_map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[number] = shard_map
        return shard_map

    def encoded(self, index: int) -> bytes:
        offset = int(self._offset[index])
        return self._shard_map(int(self._shard[index]))[offset : offset + int(self._length[index])]

    def source_key(self, index: int) -> str:
        if self._keys is None:  # dropped when pickled for a worker; checked once on open
            self._keys = read_index(self.path / INDEX_FILE)["key"]
        return str(self._keys[int(index)].as_py())

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        try:
            image = decode_image(self.encoded(index))
        except ImageDecodeError as exc:
            raise TopofrError(f"{self.path}: image {index} ({self.source_key(index)}): {exc}") from None
        return image, int(self.labels[index])


@dataclass
class PackReport:
    out_dir: Path
    num_images: int
    num_classes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source key, reason)


def _describe(dataset: FaceDataset, index: int) -> str:
    key = dataset.source_key(index)
    if dataset.path.is_dir() and (dataset.path / key).is_file():
        return str(dataset.path / key)
    return f"{dataset.path} record {key}"


def pack_dataset(
    dataset: FaceDataset,
    out_dir: str | Path,
    *,
    source: str,
    verify: bool = True,
    skip_bad: bool = False,
    transform: Callable[[int, np.ndarray], bytes] | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
    extra_meta: dict[str, Any] | None = None,
    progress: Progress | bool | None = None,
) -> PackReport:
    """Copy every image of `dataset` into a packed directory.

    Without `transform` the stored bytes are copied as they are (never re-encoded); `verify` decodes
    each one first so corrupt images are caught. `transform(index, rgb) -> encoded` re-encodes (e.g.
    alignment). A bad image is an error naming it, or, with `skip_bad`, is left out and reported.
    `transform` may raise TopofrError for one image (e.g. no landmarks): treated like a bad image.
    """
    skipped: list[tuple[str, str]] = []
    with PackedWriter(out_dir, source=source, overwrite=overwrite) as writer:
        for index in track(resolve_progress(progress), range(len(dataset)), "packing", len(dataset)):
            encoded = dataset.encoded(index)
            try:
                if transform is not None:
                    encoded = transform(index, decode_image(encoded))
                elif verify:
                    decode_image(encoded)
            except TopofrError as exc:
                if not skip_bad:
                    raise TopofrError(f"{_describe(dataset, index)}: {exc}") from None
                skipped.append((dataset.source_key(index), str(exc)))
                continue
            writer.add(encoded, int(dataset.labels[index]), dataset.source_key(index))
        meta = dict(extra_meta or {})
        if num_classes is not None:
            meta["num_classes"] = num_classes
        if skipped:
            meta["skipped"] = [key for key, _ in skipped]
        path = writer.finish(meta)
        return PackReport(
            out_dir=path,
            num_images=len(writer),
            num_classes=json.loads((path / META_FILE).read_text())["num_classes"],
            skipped=skipped,
        )
