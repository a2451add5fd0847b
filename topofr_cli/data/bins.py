"""Verification pair files (`lfw.bin` and friends, docs/method.md §3.2), read without running code.

A `.bin` is a pickle of `(images, issame)`. It is unpickled by `safe_pickle`, which resolves only the
few globals that rebuild numpy arrays, dtypes and scalars, checks their arguments (no object arrays,
nothing larger than the file), and refuses anything else (os.system, builtins.eval, ...).
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.artifacts.outputs import BIN, check_output
from topofr_cli.data.images import ImageDecodeError, decode_image, encode_jpeg, resize_rgb
from topofr_cli.data.safe_pickle import PickleRefused, restricted_load
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, track


@dataclass
class VerificationPairs:
    """2N images (encoded bytes, or uint8 [H, W, 3] arrays where a file stores pixels) and N labels."""

    images: list[bytes | np.ndarray]
    issame: np.ndarray  # bool [N]; images 2i and 2i+1 form pair i

    def __len__(self) -> int:
        return len(self.issame)


def _as_image(item: Any, path: Path, index: int) -> bytes | np.ndarray:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        item = item.view(np.ndarray)  # the loader's checked subclass → a plain array
        if item.ndim == 1:  # encoded bytes held in an array
            return item.tobytes()
        if item.ndim == 3 and item.shape[2] == 3:
            return item
    raise TopofrError(
        f"{path}: image {index} is a {type(item).__name__}"
        f"{getattr(item, 'shape', '')}, expected encoded bytes or a uint8 array"
    )


def _as_bool(item: Any, path: Path, index: int) -> bool:
    if isinstance(item, (bool, np.bool_)):
        return bool(item)
    if isinstance(item, (int, np.integer)) and int(item) in (0, 1):
        return bool(item)
    raise TopofrError(f"{path}: issame entry {index} is {item!r}, expected a boolean")


def read_bin(path: str | Path) -> VerificationPairs:
    """Read a verification `.bin`; refuses any pickle that would call code other than numpy rebuilds."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TopofrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        try:
            loaded = restricted_load(data, "ASCII")
        except UnicodeDecodeError:  # written by Python 2: its str images must come back as bytes
            loaded = restricted_load(data, "bytes")
    except PickleRefused as exc:
        raise TopofrError(f"{path}: refused to load: the pickle {exc}") from None
    except Exception as exc:  # noqa: BLE001 - damaged pickles fail inside numpy/pickle in many ways
        raise TopofrError(
            f"{path}: not a readable .bin pickle ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) < 2:
        raise TopofrError(f"{path}: expected a pickled (images, issame) pair, got {type(loaded).__name__}")
    images_raw, issame_raw = loaded[0], loaded[1]
    if isinstance(issame_raw, np.ndarray):
        issame_raw = issame_raw.view(np.ndarray).reshape(-1).tolist()
    if not isinstance(images_raw, (list, tuple)) or not isinstance(issame_raw, (list, tuple)):
        raise TopofrError(f"{path}: expected lists of images and issame flags")
    if len(images_raw) != 2 * len(issame_raw):
        raise TopofrError(
            f"{path}: {len(images_raw)} images for {len(issame_raw)} pairs (expected {2 * len(issame_raw)})"
        )
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
    """Rows `path1,path2,issame` → (line, path1, path2, issame); paths relative to the CSV's folder.

    Every image must lie inside the CSV's folder once symlinks are resolved: the `.bin` embeds the
    files' bytes, so a CSV naming `../../home/me/.ssh/id_rsa` would otherwise copy that file out."""
    rows = []
    root = csv_path.parent.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for number, fields in enumerate(csv.reader(handle), start=1):
                row = _pairs_row(csv_path, root, number, [f.strip() for f in fields])
                if row is not None:
                    rows.append(row)
    except UnicodeDecodeError as exc:
        raise TopofrError(f"{csv_path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise TopofrError(f"{csv_path}: not a readable CSV ({exc})") from None
    if not rows:
        raise TopofrError(f"{csv_path}: no pairs")
    return rows


def _pairs_row(
    csv_path: Path, root: Path, number: int, fields: list[str]
) -> tuple[int, Path, Path, bool] | None:
    if not any(fields):
        return None
    if len(fields) != 3:
        raise TopofrError(
            f"{csv_path} line {number}: expected 3 columns (path1, path2, issame), got {len(fields)}"
        )
    flag = fields[2].lower()
    if flag not in _TRUE | _FALSE:
        if number == 1 and not any((root / name).is_file() for name in fields[:2] if "\x00" not in name):
            return None  # a header: its first fields name no image (a data row with a bad flag does)
        raise TopofrError(f"{csv_path} line {number}: issame must be 1/0/true/false, got {fields[2][:40]!r}")
    images = []
    for name in fields[:2]:
        try:
            inside = (root / name).resolve().is_relative_to(root)
        except (OSError, RuntimeError, ValueError):  # symlink loop, NUL byte
            inside = False
        if not inside:
            raise TopofrError(
                f"{csv_path} line {number}: image {name[:200]!r} is not inside the CSV's folder "
                f"{root} (image paths are relative to it and may not leave it)"
            )
        images.append(csv_path.parent / name)
    return number, images[0], images[1], flag in _TRUE


def build_bin(
    csv_path: str | Path,
    out_path: str | Path,
    *,
    size: int | None = None,
    verify: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> BinReport:
    """Build a `.bin` from a pairs CSV. Images are stored as their file bytes, or resized and re-encoded
    to JPEG when `size` is given."""
    csv_path, out_path = Path(csv_path), Path(out_path)
    check_output(out_path, BIN, overwrite=overwrite)
    rows = read_pairs_csv(csv_path)
    images: list[bytes] = []
    flags: list[bool] = []
    skipped: list[tuple[int, str]] = []
    cache: dict[Path, bytes] = {}
    for number, first, second, issame in track(resolve_progress(progress), rows, "reading pairs", len(rows)):
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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TopofrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if size is not None:
            return encode_jpeg(resize_rgb(decode_image(data), size, size))
        if verify:
            decode_image(data)
    except ImageDecodeError as exc:
        raise TopofrError(f"{path}: {exc}") from None
    return data
