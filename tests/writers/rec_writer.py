"""An independent, deliberately plain writer of insightface RecordIO files (docs/method.md §3.1).

Written from the reference text only (not from topofr_cli.data.recordio) so that reading its output
checks the reader against the format, not against itself.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

REC_MAGIC = 0xCED7230A


def _frames(payload: bytes) -> bytes:
    """Split at every 4-byte-aligned occurrence of the magic; the magic itself is dropped."""
    magic = struct.pack("<I", REC_MAGIC)
    pieces, begin, i = [], 0, 0
    while i + 4 <= len(payload):
        if payload[i : i + 4] == magic:
            pieces.append(payload[begin:i])
            begin = i + 4
        i += 4
    pieces.append(payload[begin:])
    out = b""
    for n, piece in enumerate(pieces):
        if len(pieces) == 1:
            flag = 0
        elif n == 0:
            flag = 1
        elif n == len(pieces) - 1:
            flag = 3
        else:
            flag = 2
        out += struct.pack("<I", REC_MAGIC) + struct.pack("<I", (flag << 29) | len(piece)) + piece
        while len(out) % 4:
            out += b"\x00"
    return out


def pack_payload(label, image: bytes, record_id: int = 0) -> bytes:
    """`<IfQQ` header; a list/tuple label becomes a label vector (flag = its length)."""
    if isinstance(label, (list, tuple)):
        head = struct.pack("<IfQQ", len(label), 0.0, record_id, 0)
        head += b"".join(struct.pack("<f", float(v)) for v in label)
    else:
        head = struct.pack("<IfQQ", 0, float(label), record_id, 0)
    return head + image


def write_rec(
    folder: Path,
    images: list[bytes],
    labels: list,
    *,
    header: bool,
    num_classes: int | None = None,
    identity_records: bool = True,
    prefix: str = "train",
) -> tuple[Path, Path]:
    """Write `prefix.rec/.idx` (+ `property` when num_classes is given).

    With `header`: key 0 = [first identity key, end of identity keys] and no image, images at keys
    1..N, then one identity record per class holding its [start, end) image-key range (insightface layout).
    """
    folder.mkdir(parents=True, exist_ok=True)
    records: list[tuple[int, bytes]] = []
    if header:
        first_identity = 1 + len(images)
        classes = sorted({int(lab[0] if isinstance(lab, (list, tuple)) else lab) for lab in labels})
        end = first_identity + (len(classes) if identity_records else 0)
        records.append((0, pack_payload([float(first_identity), float(end)], b"")))
        keys = list(range(1, 1 + len(images)))
    else:
        keys = list(range(len(images)))
    for key, image, label in zip(keys, images, labels, strict=True):
        records.append((key, pack_payload(label, image, key)))
    if header and identity_records:
        for n, cls in enumerate(classes):
            members = [
                k
                for k, lab in zip(keys, labels, strict=True)
                if int(lab[0] if isinstance(lab, (list, tuple)) else lab) == cls
            ]
            records.append(
                (1 + len(images) + n, pack_payload([float(members[0]), float(members[-1] + 1)], b""))
            )
    rec = folder / f"{prefix}.rec"
    idx = folder / f"{prefix}.idx"
    blob, lines = b"", ""
    for key, payload in records:
        lines += f"{key}\t{len(blob)}\n"
        blob += _frames(payload)
    rec.write_bytes(blob)
    idx.write_text(lines)
    if num_classes is not None:
        (folder / "property").write_text(f"{num_classes},112,112")
    return rec, idx


def smooth_jpeg(seed: int, size: int = 32, quality: int = 90) -> bytes:
    """A small random smooth image as JPEG bytes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_with_magic(seed: int, payload_prefix_len: int, copies: int = 1) -> bytes:
    """A valid JPEG whose bytes contain the RecordIO magic `copies` times at 4-byte-aligned payload offsets.

    The magic sits in a JPEG comment segment (decoders skip comments); `payload_prefix_len` is the
    number of header bytes that will precede the image in the record payload.
    """
    jpeg = smooth_jpeg(seed)
    assert jpeg[:2] == b"\xff\xd8"
    magic = struct.pack("<I", REC_MAGIC)
    # SOI (2) + COM marker (2) + length (2) = 6 bytes before the comment body.
    lead = (-(payload_prefix_len + 6)) % 4
    body = b"x" * lead + (magic + b"abcd") * copies
    segment = b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body
    return jpeg[:2] + segment + jpeg[2:]
