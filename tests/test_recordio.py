"""RecordIO reading against files from an independent writer (tests/writers/rec_writer.py, docs/method.md §3.1)."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from writers.rec_writer import jpeg_with_magic, smooth_jpeg, write_rec

from topofr_cli.data import RecordIODataset, open_dataset
from topofr_cli.data.images import decode_image
from topofr_cli.data.recordio import MAGIC, write_recordio
from topofr_cli.errors import TopofrError


def _images(count: int, prefix_len: int = 24) -> list[bytes]:
    images = [smooth_jpeg(seed) for seed in range(count)]
    images[1] = jpeg_with_magic(101, prefix_len, copies=1)  # split in two parts (cflag 1, 3)
    images[3] = jpeg_with_magic(103, prefix_len, copies=3)  # split in four parts (cflag 1, 2, 2, 3)
    return images


def _frame_flags(rec_bytes: bytes) -> list[int]:
    flags, position = [], 0
    while position < len(rec_bytes):
        magic, lrec = struct.unpack_from("<II", rec_bytes, position)
        assert magic == MAGIC
        flags.append(lrec >> 29)
        position += 8 + (((lrec & ((1 << 29) - 1)) + 3) & ~3)
    return flags


def test_headerless_scalar_labels_with_split_records(tmp_path):
    images = _images(6)
    labels = [0, 2, 1, 2, 0, 4]
    rec, _ = write_rec(tmp_path, images, labels, header=False)
    flags = _frame_flags(rec.read_bytes())
    assert 1 in flags and 2 in flags and 3 in flags  # the test really exercises split records
    ds = open_dataset(tmp_path)
    assert isinstance(ds, RecordIODataset) and not ds.has_header_record
    assert len(ds) == 6 and ds.num_classes == 5  # no property: max label + 1
    np.testing.assert_array_equal(ds.labels, labels)
    for i, image in enumerate(images):
        assert ds.encoded(i) == image
        pixels, label = ds[i]
        np.testing.assert_array_equal(pixels, decode_image(image))
        assert label == labels[i]


def test_header_record_vector_labels_and_property(tmp_path):
    images = _images(5, prefix_len=24 + 4 * 2)
    labels = [[3.0, 7.5], [1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [1.0, 9.0]]  # class id = label[0]
    write_rec(tmp_path, images, labels, header=True, num_classes=10)
    for spelling in (tmp_path, tmp_path / "train", tmp_path / "train.rec"):
        ds = open_dataset(spelling)
        assert ds.has_header_record
        assert len(ds) == 5 and ds.num_classes == 10  # from `property`
        np.testing.assert_array_equal(ds.labels, [3, 1, 3, 0, 1])
        assert [ds.encoded(i) for i in range(5)] == images
        assert ds.source_key(0) == "train.rec:1"


def test_picklable_and_reopens_lazily(tmp_path):
    images = _images(4)
    write_rec(tmp_path, images, [0, 1, 0, 1], header=True)
    ds = open_dataset(tmp_path)
    ds[0]  # opens the map in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.encoded(3) == images[3]
    np.testing.assert_array_equal(clone[2][0], ds[2][0])


@pytest.mark.parametrize("header", [True, False])
def test_library_writer_matches_independent_writer(tmp_path, header):
    images = _images(4)
    labels = [0, 1, 1, 2]
    write_rec(tmp_path / "a", images, labels, header=header, identity_records=False)
    (tmp_path / "b").mkdir()
    write_recordio(tmp_path / "b" / "train", images, labels, header_record=header)
    assert (tmp_path / "a" / "train.rec").read_bytes() == (tmp_path / "b" / "train.rec").read_bytes()
    assert (tmp_path / "a" / "train.idx").read_text() == (tmp_path / "b" / "train.idx").read_text()


def _good_set(tmp_path):
    images = [smooth_jpeg(seed) for seed in range(4)]
    rec, idx = write_rec(tmp_path, images, [0, 1, 2, 3], header=False)
    return rec, idx


def test_truncated_rec(tmp_path):
    rec, _ = _good_set(tmp_path)
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) - 40])
    with pytest.raises(TopofrError, match=r"train\.rec key 3.*truncated"):
        open_dataset(tmp_path)


def test_wrong_magic(tmp_path):
    rec, idx = _good_set(tmp_path)
    offset = int(idx.read_text().splitlines()[2].split("\t")[1])
    data = bytearray(rec.read_bytes())
    data[offset : offset + 4] = b"\x00\x01\x02\x03"
    rec.write_bytes(bytes(data))
    with pytest.raises(TopofrError, match=r"train\.rec key 2 .*wrong magic"):
        open_dataset(tmp_path)


def test_idx_offset_past_end(tmp_path):
    rec, idx = _good_set(tmp_path)
    lines = idx.read_text().splitlines()
    lines[3] = f"3\t{rec.stat().st_size + 64}"
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(TopofrError, match=r"train\.idx line 4 \(key 3\).*past the end"):
        open_dataset(tmp_path)


def test_malformed_idx_line(tmp_path):
    _, idx = _good_set(tmp_path)
    idx.write_text(idx.read_text() + "oops\n")
    with pytest.raises(TopofrError, match=r"train\.idx line 5"):
        open_dataset(tmp_path)


def test_label_out_of_range_of_property(tmp_path):
    write_rec(tmp_path, [smooth_jpeg(s) for s in range(3)], [0, 5, 1], header=False, num_classes=3)
    with pytest.raises(TopofrError, match=r"key 1: label 5 out of range"):
        open_dataset(tmp_path)


def test_non_integer_label(tmp_path):
    write_rec(tmp_path, [smooth_jpeg(s) for s in range(2)], [0, 1.5], header=False)
    with pytest.raises(TopofrError, match=r"key 1: label 1.5 is not a class id"):
        open_dataset(tmp_path)


def test_corrupt_jpeg_named_on_access(tmp_path):
    images = [smooth_jpeg(0), b"\xff\xd8 definitely not a jpeg", smooth_jpeg(2)]
    write_rec(tmp_path, images, [0, 1, 2], header=True)
    ds = open_dataset(tmp_path)
    ds[0]
    with pytest.raises(TopofrError, match=r"train\.rec key 2: not a decodable image"):
        ds[1]
