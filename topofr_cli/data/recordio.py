"""insightface/MXNet RecordIO (`train.rec` + `train.idx` [+ `property`]) read directly, no mxnet.

Framing, payload header and the insightface header-record layout follow docs/method.md §3.1. The `.rec`
is memory-mapped; every record's frame and header is checked once, vectorised, when the dataset is
opened, so a bad offset or wrong magic is reported up front with the key and `.idx` line.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topofr_cli.artifacts.atomic import atomic_path, write_text
from topofr_cli.data.images import ImageDecodeError, decode_image
from topofr_cli.errors import TopofrError

MAGIC = 0xCED7230A  # docs/method.md §3.1
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
PAYLOAD_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2 (24 bytes)


def resolve_prefix(path: str | Path) -> Path | None:
    """`train.rec`, `train` (prefix) or a folder holding exactly one `.rec` → the prefix, else None."""
    path = Path(path)
    if path.suffix in (".rec", ".idx") and path.with_suffix(".rec").is_file():
        return path.with_suffix("")
    if path.with_name(path.name + ".rec").is_file():
        return path
    if path.is_dir():
        if (path / "train.rec").is_file():
            return path / "train"
        recs = sorted(path.glob("*.rec"))
        if len(recs) == 1:
            return recs[0].with_suffix("")
    return None


_INT64_MAX = np.iinfo(np.int64).max
# Class ids become int64 tensor indices and a classifier row each; keep them in int32's range.
MAX_CLASS_ID = np.iinfo(np.int32).max - 1


def read_idx(idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) as int64 arrays, in file order, from `key\\toffset` lines."""
    try:
        table = pd.read_csv(
            idx_path, sep="\t", header=None, names=["key", "offset"], dtype=np.int64, engine="c"
        )
    except FileNotFoundError:
        raise TopofrError(f"{idx_path}: missing (a .rec needs its .idx)") from None
    except pd.errors.EmptyDataError:
        raise TopofrError(f"{idx_path}: empty index") from None
    except (ValueError, OverflowError, pd.errors.ParserError):  # UnicodeDecodeError is a ValueError
        raise TopofrError(_first_bad_idx_line(idx_path)) from None
    except OSError as exc:
        raise TopofrError(f"{idx_path}: cannot read ({exc.strerror or exc})") from None
    keys, offsets = table["key"].to_numpy(), table["offset"].to_numpy()
    if len(keys) == 0:
        raise TopofrError(f"{idx_path}: empty index")
    _refuse_duplicate_keys(idx_path, keys)
    return keys, offsets


def _refuse_duplicate_keys(idx_path: Path, keys: np.ndarray) -> None:
    """A key listed twice points at two records: whichever a reader took, the other is lost unseen."""
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(repeated):
        first, second = sorted(order[repeated[0] : repeated[0] + 2])
        raise TopofrError(
            f"{idx_path} line {second + 1}: key {keys[second]} already listed on line {first + 1}"
        )


def _first_bad_idx_line(idx_path: Path) -> str:
    """The message for an index pandas could not parse: the first line that is not two int64 fields."""
    with open(idx_path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if len(fields) != 2 or not all(f.lstrip("-").isdigit() and f.isascii() for f in fields):
                return f"{idx_path} line {number}: expected 'key<TAB>offset', got {line.strip()[:80]!r}"
            # the length first: int() of over 4,300 digits raises a ValueError of its own
            if any(len(f.lstrip("-")) > 19 or abs(int(f)) > _INT64_MAX for f in fields):
                return f"{idx_path} line {number}: number out of range in {line.strip()[:80]!r}"
    return f"{idx_path}: unreadable index"


def read_property(property_path: Path) -> int | None:
    """num_classes from an insightface `property` file (`num_classes,112,112`), or None if absent."""
    if not property_path.is_file():
        return None
    raw = property_path.read_bytes()[:4096]
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TopofrError(
            f"{property_path} line 1: not UTF-8 text (expected 'num_classes,height,width')"
        ) from None
    try:
        classes = int(text.split(",")[0])
    except ValueError:
        raise TopofrError(
            f"{property_path} line 1: expected 'num_classes,height,width', got {text[:80]!r}"
        ) from None
    if not 1 <= classes <= MAX_CLASS_ID + 1:
        raise TopofrError(f"{property_path} line 1: num_classes {classes} is not in [1, {MAX_CLASS_ID + 1}]")
    return classes


def read_frames(buffer: Any, offset: int, size: int, where: str) -> bytes:
    """One logical record starting at `offset`: its parts joined with the magic put back (§3.1)."""
    parts = []
    position = offset
    while True:
        if position + 8 > size:
            raise TopofrError(
                f"{where}: truncated (frame header at byte {position} past the end, size {size})"
            )
        magic, lrec = struct.unpack_from("<II", buffer, position)
        if magic != MAGIC:
            raise TopofrError(
                f"{where}: wrong magic 0x{magic:08x} at byte {position} (expected 0x{MAGIC:08x})"
            )
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        start = position + 8
        if start + length > size:
            raise TopofrError(
                f"{where}: truncated (record of {length} bytes at byte {start}, file size {size})"
            )
        expected = (0, 1) if not parts else (2, 3)
        if cflag not in expected:
            raise TopofrError(f"{where}: unexpected continuation flag {cflag} at byte {position}")
        parts.append(bytes(buffer[start : start + length]))
        position = start + ((length + 3) & ~3)
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts)


def split_payload(payload: bytes, where: str) -> tuple[int, np.ndarray, memoryview]:
    """(flag, labels float32 [max(flag, 1)], image bytes) of a record payload."""
    if len(payload) < PAYLOAD_HEADER.size:
        raise TopofrError(f"{where}: record of {len(payload)} bytes is shorter than its 24-byte header")
    flag, label, _, _ = PAYLOAD_HEADER.unpack_from(payload)
    image_start = PAYLOAD_HEADER.size + 4 * flag
    if image_start > len(payload):
        raise TopofrError(f"{where}: header says {flag} labels but the record has {len(payload)} bytes")
    if flag > 0:
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=PAYLOAD_HEADER.size)
    else:
        labels = np.array([label], dtype=np.float32)
    return flag, labels, memoryview(payload)[image_start:]


class RecordIODataset:
    """Random access to the images of an insightface RecordIO set."""

    def __init__(self, path: str | Path) -> None:
        prefix = resolve_prefix(path)
        if prefix is None:
            raise TopofrError(f"{path}: no .rec file found")
        self.path = Path(path)
        self.rec_path = prefix.with_name(prefix.name + ".rec")
        self.idx_path = prefix.with_name(prefix.name + ".idx")
        self.property_path = prefix.parent / "property"
        self._map: mmap.mmap | None = None
        self._pid = os.getpid()
        keys, offsets = read_idx(self.idx_path)
        self._size = self.rec_path.stat().st_size
        self._check_offsets(keys, offsets)
        order = np.argsort(keys, kind="stable")
        self._sorted_keys, self._sorted_offsets = keys[order], offsets[order]
        self.has_header_record, image_keys = self._image_keys(keys)
        self.keys = image_keys
        self.offsets = self._offset_of(image_keys)
        self.labels = self._read_labels()
        property_classes = read_property(self.property_path)
        self.num_classes = property_classes if property_classes is not None else int(self.labels.max()) + 1
        bad = np.flatnonzero(self.labels >= self.num_classes)
        if bad.size:
            raise TopofrError(
                f"{self.rec_path} key {self.keys[bad[0]]}: label {self.labels[bad[0]]} out of "
                f"range (num_classes {self.num_classes} from {self.property_path})"
            )
        self.meta = {
            "format": "recordio",
            "num_images": len(self.keys),
            "num_classes": self.num_classes,
            "has_header_record": self.has_header_record,
            "source": str(self.rec_path),
        }

    # -- opening: checks done once, vectorised ------------------------------------------------

    def _buffer(self) -> mmap.mmap:
        if self._map is None or self._pid != os.getpid():
            with open(self.rec_path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size == 0:
                    raise TopofrError(f"{self.rec_path}: empty file")
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._map

    def _check_offsets(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        past = np.flatnonzero((offsets < 0) | (offsets > self._size - 8))  # no `offsets + 8`: it can wrap
        if past.size:
            i = past[0]
            raise TopofrError(
                f"{self.idx_path} line {i + 1} (key {keys[i]}): offset {offsets[i]} is past the "
                f"end of {self.rec_path.name} ({self._size} bytes)"
            )
        unaligned = np.flatnonzero(offsets % 4)
        if unaligned.size:
            i = unaligned[0]
            raise TopofrError(
                f"{self.idx_path} line {i + 1} (key {keys[i]}): offset {offsets[i]} is not a "
                f"record boundary (not 4-byte aligned)"
            )
        words = np.frombuffer(self._buffer(), dtype="<u4", count=self._size // 4)
        at = offsets // 4
        bad_magic = np.flatnonzero(words[at] != MAGIC)
        if bad_magic.size:
            i = bad_magic[0]
            raise TopofrError(
                f"{self.rec_path} key {keys[i]} (offset {offsets[i]}): wrong magic "
                f"0x{int(words[at[i]]):08x} (expected 0x{MAGIC:08x})"
            )
        lrec = words[at + 1]
        length = lrec & LENGTH_MASK
        cflag = lrec >> 29
        # A whole record must end inside the file; split records are checked frame by frame below.
        overflow = np.flatnonzero(offsets + 8 + length > self._size)
        if overflow.size:
            i = overflow[0]
            raise TopofrError(
                f"{self.rec_path} key {keys[i]} (offset {offsets[i]}): truncated (record of "
                f"{length[i]} bytes, file has {self._size - offsets[i] - 8} left)"
            )
        for i in np.flatnonzero(cflag != 0):
            if cflag[i] != 1:
                raise TopofrError(
                    f"{self.rec_path} key {keys[i]}: record starts with continuation flag {cflag[i]}"
                )
            read_frames(self._buffer(), int(offsets[i]), self._size, f"{self.rec_path} key {keys[i]}")
        self._words = words

    def _offset_of(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self._sorted_keys, keys)
        pos = np.minimum(pos, len(self._sorted_keys) - 1)
        missing = np.flatnonzero(self._sorted_keys[pos] != keys)
        if missing.size:
            raise TopofrError(
                f"{self.idx_path}: key {keys[missing[0]]} (listed by the header record of "
                f"{self.rec_path.name}) is missing"
            )
        return self._sorted_offsets[pos]

    def _image_keys(self, keys: np.ndarray) -> tuple[bool, np.ndarray]:
        """insightface sets start with a header record (flag > 0, no image) naming the image keys."""
        first_key = int(self._sorted_keys[0])
        where = f"{self.rec_path} key {first_key}"
        payload = read_frames(self._buffer(), int(self._sorted_offsets[0]), self._size, where)
        flag, labels, image = split_payload(payload, where)
        if flag == 0 or len(image) > 0:
            return False, np.sort(keys)
        # label[0] is where the image keys end; it sizes an array, so it must fit the .idx it indexes
        if not np.isfinite(labels[0]) or not first_key + 1 < labels[0] <= first_key + len(keys):
            raise TopofrError(
                f"{where}: header record says image keys end at {labels[0]}, but the "
                f"{self.idx_path.name} has keys for {len(keys)} records from key {first_key}"
            )
        return True, np.arange(first_key + 1, int(labels[0]), dtype=np.int64)

    def _read_labels(self) -> np.ndarray:
        """Class ids: the scalar label, or label[0] when the record has a label vector (flag > 0)."""
        words = self._words
        at = self.offsets // 4
        whole = (words[at + 1] >> 29) == 0
        length = words[at + 1] & LENGTH_MASK
        too_short = np.flatnonzero(whole & (length < PAYLOAD_HEADER.size))
        if too_short.size:
            raise TopofrError(
                f"{self.rec_path} key {self.keys[too_short[0]]}: record shorter than its header"
            )
        flag = words[np.minimum(at + 2, len(words) - 1)].astype(np.int64)  # 4 * flag must not wrap
        word_of_label = np.where(flag > 0, at + 8, at + 3)  # vector labels follow the 24-byte header
        labels = words[np.minimum(word_of_label, len(words) - 1)].view("<f4").astype(np.float64)
        bad_vector = np.flatnonzero(whole & (flag > 0) & (length < PAYLOAD_HEADER.size + 4 * flag))
        if bad_vector.size:
            raise TopofrError(
                f"{self.rec_path} key {self.keys[bad_vector[0]]}: label vector runs past the record"
            )
        for i in np.flatnonzero(~whole):  # split records: read the joined payload
            where = f"{self.rec_path} key {self.keys[i]}"
            labels[i] = split_payload(
                read_frames(self._buffer(), int(self.offsets[i]), self._size, where), where
            )[1][0]
        with np.errstate(invalid="ignore"):
            invalid = np.flatnonzero(
                ~np.isfinite(labels) | (labels < 0) | (labels != np.floor(labels)) | (labels > MAX_CLASS_ID)
            )
        if invalid.size:
            i = invalid[0]
            raise TopofrError(
                f"{self.rec_path} key {self.keys[i]}: label {labels[i]} is not a class id "
                f"(an integer in [0, {MAX_CLASS_ID}])"
            )
        return labels.astype(np.int64)

    # -- access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_map"] = None
        state.pop("_words", None)
        return state

    def record(self, index: int) -> tuple[int, np.ndarray, bytes]:
        """(flag, labels, image bytes) of image `index`."""
        where = f"{self.rec_path} key {self.keys[index]}"
        payload = read_frames(self._buffer(), int(self.offsets[index]), self._size, where)
        flag, labels, image = split_payload(payload, where)
        return flag, labels, bytes(image)

    def encoded(self, index: int) -> bytes:
        return self.record(index)[2]

    def source_key(self, index: int) -> str:
        return f"{self.rec_path.name}:{self.keys[index]}"

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        try:
            image = decode_image(self.encoded(index))
        except ImageDecodeError as exc:
            raise TopofrError(f"{self.rec_path} key {self.keys[index]}: {exc}") from None
        return image, int(self.labels[index])


def frame_record(payload: bytes) -> bytes:
    """Frame one payload for a `.rec`, splitting it where the magic occurs (aligned), as MXNet does."""
    usable = len(payload) // 4 * 4
    words = np.frombuffer(payload, dtype="<u4", count=usable // 4)
    cuts = (np.flatnonzero(words == MAGIC) * 4).tolist()
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(payload[start:cut])
        start = cut + 4
    pieces.append(payload[start:])
    out = bytearray()
    for number, piece in enumerate(pieces):
        if len(pieces) == 1:
            cflag = 0
        else:
            cflag = 1 if number == 0 else 3 if number == len(pieces) - 1 else 2
        out += struct.pack("<II", MAGIC, (cflag << 29) | len(piece)) + piece + b"\0" * (-len(piece) % 4)
    return bytes(out)


def write_recordio(
    prefix: str | Path,
    images: list[bytes],
    labels: list[int],
    *,
    header_record: bool = True,
    num_classes: int | None = None,
) -> Path:
    """Write an insightface-style `.rec`/`.idx` (+ `property`) — used by benchmarks and exports.

    With `header_record`, key 0 holds [first identity key, ...] per §3.1 and images are keys 1..N.
    """
    prefix = Path(prefix)
    rec_path, idx_path = prefix.with_name(prefix.name + ".rec"), prefix.with_name(prefix.name + ".idx")
    first = 1 if header_record else 0
    lines, offset = [], 0
    with atomic_path(rec_path) as tmp, open(tmp, "wb") as rec:
        if header_record:
            last_key = first + len(images)
            payload = PAYLOAD_HEADER.pack(2, 0.0, 0, 0) + struct.pack("<ff", last_key, last_key)
            record = frame_record(payload)
            rec.write(record)
            lines.append(f"0\t{offset}\n")
            offset += len(record)
        for key, (image, label) in enumerate(zip(images, labels, strict=True), start=first):
            record = frame_record(PAYLOAD_HEADER.pack(0, float(label), key, 0) + image)
            rec.write(record)
            lines.append(f"{key}\t{offset}\n")
            offset += len(record)
    write_text(idx_path, "".join(lines))
    classes = num_classes if num_classes is not None else max(labels) + 1
    write_text(prefix.parent / "property", f"{classes},112,112\n")
    return rec_path
