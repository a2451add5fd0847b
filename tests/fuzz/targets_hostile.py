"""Generators for the classes of issue 19 ("Hostile input II"): inputs built with intent, not by
flipping bytes. Each `run_*` builds one input from `rng`, reads it the way the commands do, and
raises AssertionError (counted as `other`) where a reader accepts something it must not.

- `bin_dtype`: crafted numpy dtype states (object kinds with `hasobject` cleared, records and
  sub-arrays of objects, altered item sizes, pointers as data) in arrays and scalars.
- `bin_memo`: pickles that reuse one memoised object to multiply an allocation (encode, empty arrays,
  array copies, dtypes, containers) far beyond the file's size.
- `image_modes`: every PIL pixel mode with extreme values, in several formats, with EXIF orientations
  valid and invalid; the decoded shape must match the header's and the pixels be uint8 RGB.
- `nonfinite_model`: checkpoints and bare state dicts with NaN or infinity in one tensor (checksum
  recomputed): a load that succeeds is a failure.
- `write_limit`: a packed dataset written under a random file-size limit: a project error or a
  complete dataset, and never a staging folder left behind.
- `landmarks`: landmark CSVs (absurd coordinates, encodings, BOMs) and alignment of any 5 points.
- `pairs_csv`: pairs CSVs with damaged first rows, odd encodings and escaping paths.
"""

from __future__ import annotations

import io
import pickle
import resource
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fuzz.mutate import INTERESTING_FLOATS, mutate_bytes


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


class _Reduce:
    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
_SPECS = ["O8", "V8", "V16", "u1", "f8", "i4", "b1", "S4", "U2", "M8", "m8", "c16", "f2"]


def _dtype_state(rng: np.random.Generator) -> tuple:
    fields = _pick(rng, [None, None, ("a",), ("a", "b")])
    table = None
    if fields is not None:
        table = {name: (np.dtype(_pick(rng, ["O", "u1", "f8"])), 8 * i) for i, name in enumerate(fields)}
    subarray = _pick(rng, [None, None, (np.dtype("O"), (1,)), (np.dtype("u1"), (4,))])
    elsize = _pick(rng, [-1, 0, 1, 8, 4096, 2**31 - 1])
    flags = int(rng.integers(0, 64)) if rng.random() < 0.5 else 0
    return (
        3,
        _pick(rng, ["|", "<", ">", "="]),
        subarray,
        fields,
        table,
        elsize,
        _pick(rng, [-1, 1, 8]),
        flags,
    )


def seed_bin_dtype(folder: Path) -> None:
    (folder / "note").write_text("inputs are built per case\n")


def run_bin_dtype(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.bins import read_bin
    from topofr_cli.data.images import decode_image

    dtype = _Reduce(np.dtype, (_pick(rng, _SPECS), False, bool(rng.random() < 0.5)), _dtype_state(rng))
    pointer = struct.pack("<Q", _pick(rng, [0, 8, 0x4141414141, 2**63, 2**64 - 1]))
    raw = pointer * int(rng.integers(1, 5)) if rng.random() < 0.8 else bytes(int(rng.integers(0, 64)))
    shape = (len(raw) // _pick(rng, [1, 8, 16]),) if rng.random() < 0.7 else (int(rng.integers(0, 9)),)
    if rng.random() < 0.2:
        crafted = _Reduce(_multiarray.scalar, (dtype, raw))
    else:
        crafted = _Reduce(_multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))
    images = [np.zeros((2, 2, 3), np.uint8)] * 2
    payload = (images, crafted) if rng.random() < 0.5 else ([crafted, crafted], [True])
    path = case / "crafted.bin"
    path.write_bytes(pickle.dumps(payload, protocol=_pick(rng, [2, 4, 5])))
    pairs = read_bin(path)
    for image in pairs.images:
        decode_image(image)


def _opcode_bytes(text_length: int) -> bytes:
    return b"X" + struct.pack("<I", text_length) + b"a" * text_length


def run_bin_memo(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.bins import read_bin

    count = int(rng.integers(1_000, 200_000))
    size = int(_pick(rng, [1 << 10, 1 << 16, 1 << 20]))
    kind = int(rng.integers(0, 5))
    if kind == 0:  # one string, encoded `count` times
        setup = b"c_codecs\nencode\nq\x00" + _opcode_bytes(size) + b"q\x01X\x06\x00\x00\x00latin1q\x02"
        item = b"h\x00(h\x01h\x02tR"
    elif kind == 1:  # empty arrays of `size` bytes
        setup = b"cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01"
        item = b"h\x00(h\x01(J" + struct.pack("<i", size) + b"tC\x01btR"
    elif kind == 2:  # one byte string as the data of many arrays (each a copy)
        setup = (
            b"cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01"
            b"cnumpy\ndtype\nq\x02B" + struct.pack("<I", size) + b"\x00" * size + b"q\x03"
        )
        item = (
            b"h\x00(h\x01(K\x00tC\x01btR(K\x01(J"
            + struct.pack("<i", size)
            + b"th\x02(X\x02\x00\x00\x00u1\x89\x88tR\x89h\x03tb"
        )
    elif kind == 3:  # dtypes
        setup = b"cnumpy\ndtype\nq\x00"
        item = b"h\x00(X\x02\x00\x00\x00f8\x89\x88tR"
    else:  # bare containers
        setup, item = b"", _pick(rng, [b"]", b"}", b")", b"N", b"\x88"])
    data = b"\x80\x02" + setup + b"](" + item * count + b"e]]\x86\x86."
    path = case / "memo.bin"
    path.write_bytes(data)
    read_bin(path)


_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "I;16", "I;16B", "I", "F"]
_FORMATS = {"PNG", "TIFF", "JPEG", "WEBP", "BMP", "GIF"}


def _pixels(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    height, width = size
    if mode == "F":
        values = rng.choice([*INTERESTING_FLOATS, 0.5, 1.0, 200.0], size=(height, width)).astype(np.float32)
        return Image.fromarray(values, mode="F")
    if mode in ("I", "I;16", "I;16B"):
        bound = 65535 if mode != "I" else 2**31 - 1
        values = rng.choice([0, 1, 255, 256, 65535, bound, -1 if mode == "I" else 0], size=(height, width))
        if mode == "I":
            return Image.fromarray(values.astype(np.int32), mode="I")
        return Image.frombytes(
            mode, (width, height), values.astype("<u2" if mode == "I;16" else ">u2").tobytes()
        )
    bands = len(Image.new(mode, (1, 1)).getbands())
    values = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
    image = (
        Image.frombytes(mode, (width, height), values.tobytes())
        if mode != "1"
        else Image.new("1", (width, height))
    )
    if mode == "P":
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image


def _saved(image: Image.Image, fmt: str, save: dict) -> bytes:
    """The image in `fmt`, else in TIFF, else as RGB PNG (not every format holds every mode or tag)."""
    for form, options, picture in (
        (fmt, save, image),
        ("TIFF", save, image),
        ("PNG", {}, image.convert("RGB")),
    ):
        buffer = io.BytesIO()
        try:
            picture.save(buffer, format=form, **options)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            continue
    raise AssertionError("unreachable: RGB PNG always saves")


def run_image_modes(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.images import decode_image, image_size

    mode = _pick(rng, _MODES)
    image = _pixels(rng, mode, (int(rng.integers(1, 24)), int(rng.integers(1, 24))))
    fmt = _pick(rng, sorted(_FORMATS))
    save = {}
    if rng.random() < 0.6:
        exif = Image.Exif()
        exif[0x0112] = _pick(rng, [1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 65535])
        save["exif"] = exif.tobytes()
    if mode == "P" and rng.random() < 0.5:
        save["transparency"] = int(rng.integers(0, 256))
    data = _saved(image, fmt, save)
    if rng.random() < 0.3:
        data = mutate_bytes(data, rng)
    header = image_size(data)
    rgb = decode_image(data)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, (rgb.dtype, rgb.shape)
    assert rgb.shape[:2] == header, (rgb.shape, header, mode, fmt)


def _nonfinite(rng: np.random.Generator) -> float:
    return _pick(rng, [float("nan"), float("inf"), float("-inf")])


def run_nonfinite_model(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.artifacts.digest import ALGORITHM, content_digest
    from topofr_cli.evaluation.model_io import load_model

    name = _pick(rng, ["step_00000001.pt", "backbone.pt"])
    path = case / name
    payload = torch.load(path, weights_only=True)
    payload.pop("checksum", None)
    tensors = payload.get("backbone", payload)
    floating = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.numel())
    if "classifier" in payload and rng.random() < 0.2:
        payload["classifier"].view(-1)[int(rng.integers(payload["classifier"].numel()))] = _nonfinite(rng)
    else:
        tensor = tensors[_pick(rng, floating)]
        tensor.view(-1)[int(rng.integers(tensor.numel()))] = _nonfinite(rng)
    if "format" in payload:
        payload["checksum"] = {"algorithm": ALGORITHM, "digest": content_digest(payload)}
    torch.save(payload, path)
    load_model(path)
    raise AssertionError(f"{name} with a non-finite weight was loaded")


def run_write_limit(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.folder import ImageFolderDataset
    from topofr_cli.data.packed import pack_dataset

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = int(_pick(rng, [0, 1, 100, 1000, 4000, 20_000, 10**6]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        dataset = ImageFolderDataset(case / "faces")
        pack_dataset(dataset, case / "packed", source="faces", verify=True, num_classes=2, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        left = sorted(p.name for p in case.iterdir() if p.name.startswith("."))
        assert left == [], f"staging left behind: {left}"


_LANDMARK_SCALES = [1.0, 1.0, 1.0, 0.01, 1e3, 1e300, -1.0, float("nan"), float("inf")]


def run_landmarks(case: Path, rng: np.random.Generator) -> None:
    """Landmark CSVs and alignment; LandmarkError becomes the line `prepare folder` prints for it."""
    from topofr_cli.data.align import LandmarkError
    from topofr_cli.errors import TopofrError

    try:
        _landmarks(case, rng)
    except LandmarkError as exc:
        raise TopofrError(f"cannot align: {exc}") from None


def _landmarks(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.align import ARCFACE_TEMPLATE, align_face, read_landmarks

    rgb = rng.integers(0, 256, (int(rng.integers(8, 160)), int(rng.integers(8, 160)), 3), dtype=np.uint8)
    points = ARCFACE_TEMPLATE * _pick(rng, _LANDMARK_SCALES) + rng.normal(0, _pick(rng, [0, 5, 1e6]), (5, 2))
    if rng.random() < 0.5:
        align_face(rgb, points, size=_pick(rng, [112, 128]))
        return
    text = "path,x1,y1\n" + "ann/1.png," + ",".join(repr(float(v)) for v in points.reshape(-1)) + "\n"
    encoding = _pick(rng, ["utf-8", "utf-8-sig", "utf-16", "latin-1", "utf-8"])
    data = text.replace("ann", _pick(rng, ["ann", "caf\xe9", "/etc/ann", "../ann"])).encode(
        encoding, "replace"
    )
    if rng.random() < 0.3:
        data = mutate_bytes(data, rng)
    (case / "lm.csv").write_bytes(data)
    for key, value in read_landmarks(case / "lm.csv", case).items():
        assert value.shape == (5, 2) and np.isfinite(value).all(), key
        align_face(rgb, value)


def run_pairs_csv(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.bins import build_bin

    names = ["a.jpg", "b.jpg"] * 6 + ["../x.jpg", "/etc/hostname", "missing.jpg", "a.jpg\x00", "sub/../a.jpg"]
    flags = ["1", "0"] * 4 + ["true", "maybe", "", "issame", "2"]
    rows = [
        f"{_pick(rng, names)},{_pick(rng, names)},{_pick(rng, flags)}" for _ in range(int(rng.integers(1, 5)))
    ]
    data = ("\n".join(rows) + "\n").encode(_pick(rng, ["utf-8", "utf-8-sig", "latin-1"]), "replace")
    if rng.random() < 0.3:
        data = mutate_bytes(data, rng)
    (case / "pairs.csv").write_bytes(data)
    build_bin(case / "pairs.csv", case / "out.bin", progress=False)


def seed_pairs_csv(folder: Path) -> None:
    for i, name in enumerate(("a.jpg", "b.jpg")):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / name, format="JPEG")


__all__ = [
    "run_landmarks",
    "run_pairs_csv",
    "seed_pairs_csv",
    "run_bin_dtype",
    "run_bin_memo",
    "run_image_modes",
    "run_nonfinite_model",
    "run_write_limit",
    "seed_bin_dtype",
]
