"""Verification pair files (`lfw.bin` and friends, REFERENCE §3.2), read without running code.

A `.bin` is a pickle of `(images, issame)`. Unpickling can call any importable function, so the
reader resolves only the few globals that rebuild numpy arrays, dtypes and scalars; anything else
(os.system, builtins.eval, ...) is refused before it can be called.
"""

from __future__ import annotations

import csv
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.artifacts.outputs import BIN, check_output
from topofr_cli.data.images import ImageDecodeError, decode_image, encode_jpeg, resize_rgb
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, track

# (module, name) pairs a numpy array/dtype/scalar pickle needs, across numpy 1.x and 2.x module names
# and pickle protocols 2-5. `_codecs.encode` is how protocol-2 pickles written by Python 3 store bytes.
_ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class _RefusedGlobal(Exception):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(module, name)
        return super().find_class(module, name)


@dataclass
class VerificationPairs:
    """2N images (encoded bytes, or uint8 [H, W, 3] arrays where a file stores pixels) and N labels."""

    images: list[bytes | np.ndarray]
    issame: np.ndarray  # bool [N]; images 2i and 2i+1 form pair i

    def __len__(self) -> int:
        return len(self.issame)


def _restricted_load(data: bytes, encoding: str) -> Any:
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _as_image(item: Any, path: Path, index: int) -> bytes | np.ndarray:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        if item.ndim == 1:  # encoded bytes held in an array
            return item.tobytes()
        if item.ndim == 3 and item.shape[2] == 3:
            return item
    raise TopofrError(f"{path}: image {index} is a {type(item).__name__}"
                      f"{getattr(item, 'shape', '')}, expected encoded bytes or a uint8 array")


def _as_bool(item: Any, path: Path, index: int) -> bool:
    if isinstance(item, (bool, np.bool_)):
        return bool(item)
    if isinstance(item, (int, np.integer)) and int(item) in (0, 1):
        return bool(item)
    raise TopofrError(f"{path}: issame entry {index} is {item!r}, expected a boolean")


def read_bin(path: str | Path) -> VerificationPairs:
    """Read a verification `.bin`; refuses any pickle that would call code other than numpy rebuilds."""
    path = Path(path)
    data = path.read_bytes()
    try:
        try:
            loaded = _restricted_load(data, "ASCII")
        except UnicodeDecodeError:  # written by Python 2: its str images must come back as bytes
            loaded = _restricted_load(data, "bytes")
    except _RefusedGlobal as exc:
        raise TopofrError(f"{path}: refused to load: the pickle references {exc}, which a .bin never "
                          f"needs (it could run code)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError) as exc:
        raise TopofrError(f"{path}: not a readable .bin pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) < 2:
        raise TopofrError(f"{path}: expected a pickled (images, issame) pair, got {type(loaded).__name__}")
    images_raw, issame_raw = loaded[0], loaded[1]
    if isinstance(issame_raw, np.ndarray):
        issame_raw = issame_raw.reshape(-1).tolist()
    if not isinstance(images_raw, (list, tuple)) or not isinstance(issame_raw, (list, tuple)):
        raise TopofrError(f"{path}: expected lists of images and issame flags")
    if len(images_raw) != 2 * len(issame_raw):
        raise TopofrError(f"{path}: {len(images_raw)} images for {len(issame_raw)} pairs "
                          f"(expected {2 * len(issame_raw)})")
    images = [_as_image(item, path, i) for i, item in enumerate(images_raw)]
    issame = np.array([_as_bool(item, path, i) for i, item in enumerate(issame_raw)], dtype=np.bool_)
    return VerificationPairs(images=images, issame=issame)


def write_bin(path: str | Path, images: list[bytes], issame: Any) -> Path:
    """Write `(images, issame)` as a `.bin` readable by insightface and by `read_bin` (temp + rename)."""
    path = Path(path)
    flags = [bool(x) for x in np.asarray(issame, dtype=bool).reshape(-1)]
    if len(images) != 2 * len(flags):
        raise ValueError(f"write_bin: {len(images)} images for {len(flags)} pairs")
    payload = ([bytes(image) if not isinstance(image, np.ndarray) else image for image in images], flags)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)
    return path


_TRUE = frozenset({"1", "true", "yes", "same", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "different", "f", "n"})


@dataclass
class BinReport:
    path: Path
    num_pairs: int
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)


def read_pairs_csv(csv_path: Path) -> list[tuple[int, Path, Path, bool]]:
    """Rows `path1,path2,issame` → (line, path1, path2, issame); relative paths from the CSV's folder."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for number, fields in enumerate(csv.reader(handle), start=1):
            fields = [f.strip() for f in fields]
            if not any(fields):
                continue
            if len(fields) != 3:
                raise TopofrError(f"{csv_path} line {number}: expected 3 columns (path1, path2, issame), "
                                  f"got {len(fields)}")
            flag = fields[2].lower()
            if flag not in _TRUE | _FALSE:
                if number == 1:
                    continue  # header
                raise TopofrError(f"{csv_path} line {number}: issame must be 1/0/true/false, got {fields[2]!r}")
            first, second = (csv_path.parent / fields[0]), (csv_path.parent / fields[1])
            rows.append((number, first, second, flag in _TRUE))
    if not rows:
        raise TopofrError(f"{csv_path}: no pairs")
    return rows


def build_bin(csv_path: str | Path, out_path: str | Path, *, size: int | None = None, verify: bool = True,
              skip_bad: bool = False, overwrite: bool = False,
              progress: Progress | bool | None = None) -> BinReport:
    """Build a `.bin` from a pairs CSV. Images are stored as their file bytes, or resized and re-encoded
    to JPEG when `size` is given."""
    csv_path, out_path = Path(csv_path), Path(out_path)
    check_output(out_path, BIN, overwrite=overwrite)
    rows = read_pairs_csv(csv_path)
    images: list[bytes] = []
    flags: list[bool] = []
    skipped: list[tuple[int, str]] = []
    cache: dict[Path, bytes] = {}
    for number, first, second, issame in track(resolve_progress(progress), rows, "reading pairs",
                                                        len(rows)):
        pair = []
        try:
            for image_path in (first, second):
                if image_path not in cache:
                    cache[image_path] = _load_pair_image(image_path, size, verify)
                pair.append(cache[image_path])
        except TopofrError as exc:
            if not skip_bad:
                raise TopofrError(f"{csv_path} line {number}: {exc}") from None
            skipped.append((number, str(exc)))
            continue
        images.extend(pair)
        flags.append(issame)
    if not flags:
        raise TopofrError(f"{csv_path}: every pair was skipped")
    write_bin(out_path, images, flags)
    return BinReport(path=out_path, num_pairs=len(flags), skipped=skipped)


def _load_pair_image(path: Path, size: int | None, verify: bool) -> bytes:
    if not path.is_file():
        raise TopofrError(f"{path}: no such image")
    data = path.read_bytes()
    try:
        if size is not None:
            return encode_jpeg(resize_rgb(decode_image(data), size, size))
        if verify:
            decode_image(data)
    except ImageDecodeError as exc:
        raise TopofrError(f"{path}: {exc}") from None
    return data
