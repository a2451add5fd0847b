"""Readers given hostile bytes: a TopofrError naming the file and the record, and no allocation sized by the file's claims."""

from __future__ import annotations

import io
import json
import pickle
import resource
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from writers.rec_writer import smooth_jpeg, write_rec

from topofr_cli.cli.common import printable_message
from topofr_cli.config import Recipe
from topofr_cli.data.bins import read_bin
from topofr_cli.data.folder import ImageFolderDataset
from topofr_cli.data.images import MAX_IMAGE_PIXELS, decode_image, image_size
from topofr_cli.data.packed import PackedDataset, PackedWriter
from topofr_cli.data.recordio import RecordIODataset
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.models import create_backbone


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_printable_message_escapes_markup_controls_and_undecodable_bytes():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    shown = printable_message(f"/data/[red]x[/red]/{name}\x1b[2J\r\nline two\tend")
    assert shown == "/data/\\[red]x\\[/red]/caf\\xe9\\x1b[2J\\x0d line two end"


def test_bin_length_prefix_beyond_the_file(tmp_path):
    """A 21-byte pickle whose BINBYTES8 opcode claims 3.5 GB."""
    path = tmp_path / "claim.bin"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 3_500_000_000) + b"abcdefghi.")
    before = _peak_rss_mb()
    with pytest.raises(TopofrError, match=r"claim\.bin: not a readable \.bin pickle"):
        read_bin(path)
    assert _peak_rss_mb() - before < 100


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (([np.array([b"x", 1], dtype=object)] * 2, [True]), "an array of Python objects"),
        (([np.zeros(3, np.uint8)] * 2, np.array([1], dtype=object)), "an array of Python objects"),
    ],
)
def test_bin_object_arrays_are_refused(tmp_path, obj, fragment):
    (tmp_path / "o.bin").write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(TopofrError, match=fragment):
        read_bin(tmp_path / "o.bin")


def test_bin_array_state_larger_than_its_data(tmp_path):
    data = pickle.dumps(([np.zeros(4, np.uint8), np.zeros(4, np.uint8)], [True]), protocol=2)
    # numpy's state tuple holds the shape (4,) as BININT1 4, TUPLE1; make it LONG1 4000000000, TUPLE1
    small, large = b"K\x04\x85", b"\x8a\x05" + (4_000_000_000).to_bytes(5, "little") + b"\x85"
    assert small in data
    (tmp_path / "s.bin").write_bytes(data.replace(small, large, 1))
    with pytest.raises(
        TopofrError,
        match=r"s\.bin: refused to load: the pickle asks for an array of shape "
        r"\(4000000000,\) whose data holds 4 bytes",
    ):
        read_bin(tmp_path / "s.bin")


def test_recordio_label_vector_length_cannot_wrap(tmp_path):
    """flag = 2**30 labels: 4 * flag wraps to 0 in uint32 and used to pass the length check."""
    rec, idx = write_rec(tmp_path, [smooth_jpeg(0), smooth_jpeg(1)], [0, 1], header=False)
    second = int(idx.read_text().splitlines()[1].split("\t")[1])
    blob = bytearray(rec.read_bytes())
    blob[second + 8 : second + 12] = struct.pack("<I", 2**30)
    rec.write_bytes(bytes(blob))
    with pytest.raises(TopofrError, match=r"train\.rec key 1: label vector runs past the record"):
        RecordIODataset(tmp_path)


def test_recordio_header_record_end_key_nan(tmp_path):
    write_rec(tmp_path, [smooth_jpeg(0)], [0], header=True)
    rec = tmp_path / "train.rec"
    blob = bytearray(rec.read_bytes())
    blob[32:36] = struct.pack("<f", float("nan"))
    rec.write_bytes(bytes(blob))
    with pytest.raises(TopofrError, match=r"train\.rec key 0: header record says image keys end at nan"):
        RecordIODataset(tmp_path)


def test_recordio_idx_not_utf8(tmp_path):
    write_rec(tmp_path, [smooth_jpeg(0)], [0], header=False)
    (tmp_path / "train.idx").write_bytes(b"0\t0\n\xff\t8\n")
    with pytest.raises(TopofrError, match=r"train\.idx line 2: expected 'key<TAB>offset'"):
        RecordIODataset(tmp_path)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixel_limit_in_decode_and_header_read():
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    data = _png(side, side)
    with pytest.raises(TopofrError, match=f"image of {side} x {side} pixels is larger than the limit"):
        decode_image(data)
    with pytest.raises(TopofrError, match="larger than the limit"):
        image_size(data)
    with pytest.raises(TopofrError, match="larger than the limit"):  # PIL's own bomb error, reworded
        decode_image(_png(20000, 20000))
    assert decode_image(_png(64, 48)).shape == (48, 64, 3)


def _packed(tmp_path):
    with PackedWriter(tmp_path / "set", source="t") as writer:
        for i in range(3):
            writer.add(smooth_jpeg(i), i % 2, f"k{i}")
        return writer.finish({"num_classes": 2})


def test_packed_offset_plus_length_cannot_wrap(tmp_path):
    folder = _packed(tmp_path)
    table = pq.read_table(folder / "index.parquet")
    offsets = table["offset"].to_pylist()
    offsets[1] = 2**63 - 10
    pq.write_table(table.set_column(1, "offset", pa.array(offsets, pa.int64())), folder / "index.parquet")
    with pytest.raises(
        TopofrError, match=r"index\.parquet: row 1: offset\+length past the end of images-00000"
    ):
        PackedDataset(folder)


def test_packed_nulls_and_wrong_types_in_the_index(tmp_path):
    folder = _packed(tmp_path)
    table = pq.read_table(folder / "index.parquet")
    pq.write_table(table.set_column(3, "label", pa.array([0, None, 1], pa.int64())), folder / "index.parquet")
    with pytest.raises(TopofrError, match=r"column 'label' has type int64 \(1 nulls\), expected integer"):
        PackedDataset(folder)
    pq.write_table(table.set_column(2, "length", pa.array(["1", "2", "3"])), folder / "index.parquet")
    with pytest.raises(TopofrError, match=r"column 'length' has type string"):
        PackedDataset(folder)


def test_packed_meta_json_nested_too_deep(tmp_path):
    folder = _packed(tmp_path)
    (folder / "meta.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(TopofrError, match=r"meta\.json: not valid JSON"):
        PackedDataset(folder)
    meta = {"format": "topofr-packed", "num_images": 3, "num_classes": True}
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TopofrError, match="key 'num_classes' must be an integer"):
        PackedDataset(folder)


def test_image_folder_file_that_cannot_be_read(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.jpg").write_bytes(smooth_jpeg(0))
    dataset = ImageFolderDataset(tmp_path)
    (tmp_path / "ann" / "a.jpg").unlink()
    (tmp_path / "ann" / "a.jpg").mkdir()
    with pytest.raises(TopofrError, match=r"ann/a\.jpg: cannot read"):
        dataset[0]


def test_checkpoint_declaring_a_huge_embedding_is_refused_before_building(tmp_path):
    recipe = Recipe().to_dict()
    payload = {
        "format": "topofr-checkpoint",
        "model": {"network": "mbf", "embedding_size": 2**40},
        "recipe": recipe,
        "backbone": create_backbone("mbf", 8).state_dict(),
    }
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(
        TopofrError, match=r"c\.pt: model\.embedding_size 1099511627776 does not match the weights \(8\)"
    ):
        load_model(tmp_path / "c.pt")
    payload["model"] = True
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(TopofrError, match=r"c\.pt: key 'model' holds a bool, expected a mapping"):
        load_model(tmp_path / "c.pt")


def test_bin_memo_index_cannot_size_the_memo_table(tmp_path):
    """LONG_BINPUT 2**32-1: the C unpickler would grow its memo to 2**32 entries (32 GB) for 9 bytes."""
    (tmp_path / "memo.bin").write_bytes(b"\x80\x02]r" + struct.pack("<I", 2**32 - 1) + b".")
    before = _peak_rss_mb()
    with pytest.raises(
        TopofrError,
        match=r"memo\.bin: not a readable \.bin pickle \(UnpicklingError: memo index "
        r"4294967295 at opcode 2\)",
    ):
        read_bin(tmp_path / "memo.bin")
    assert _peak_rss_mb() - before < 100
