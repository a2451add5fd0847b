"""Packed format: write → read round trip, sharding, meta.json, and failures that leave nothing behind."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from writers.rec_writer import smooth_jpeg

from topofr_cli import __version__
from topofr_cli.data import PackedDataset, open_dataset
from topofr_cli.data.images import decode_image
from topofr_cli.data.packed import PackedWriter, shard_name
from topofr_cli.errors import TopofrError


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if name in p.name]


def test_round_trip_over_several_shards(tmp_path):
    images = [smooth_jpeg(seed) for seed in range(9)]
    labels = [4, 0, 1, 1, 2, 0, 3, 4, 2]
    out = tmp_path / "packed"
    with PackedWriter(out, source="unit-test", shard_bytes=3 * max(map(len, images))) as writer:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            writer.add(image, label, f"key/{i}")
        (writer.tmp_dir / "extra.bin").write_bytes(b"x")
        assert writer.finish({"verification_bins": ["extra.bin"]}) == out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "topofr-packed" and meta["num_images"] == 9 and meta["num_classes"] == 5
    assert meta["image_size"] == [32, 32] and meta["source"] == "unit-test"
    assert meta["topofr_version"] == __version__ and meta["verification_bins"] == ["extra.bin"]
    assert meta["num_shards"] >= 3 and (out / shard_name(meta["num_shards"] - 1)).is_file()
    assert (out / "extra.bin").read_bytes() == b"x"
    assert pq.read_table(out / "index.parquet").column_names == ["shard", "offset", "length", "label", "key"]

    ds = open_dataset(out)
    assert isinstance(ds, PackedDataset) and len(ds) == 9 and ds.num_classes == 5
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels
    for i, image in enumerate(images):
        assert ds.encoded(i) == image
        assert ds.source_key(i) == f"key/{i}"
        pixels, label = ds[i]
        np.testing.assert_array_equal(pixels, decode_image(image))
        assert label == labels[i]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.encoded(8) == images[8] and clone.source_key(2) == "key/2"
    assert _leftovers(tmp_path, ".packed.tmp") == []


def test_num_classes_override_and_mixed_sizes(tmp_path):
    with PackedWriter(tmp_path / "p", source="s") as writer:
        writer.add(smooth_jpeg(0, size=32), 0, "a")
        writer.add(smooth_jpeg(1, size=48), 1, "b")
        writer.finish({"num_classes": 7})
    meta = open_dataset(tmp_path / "p").meta
    assert meta["num_classes"] == 7 and meta["image_size"] is None


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), PackedWriter(tmp_path / "p", source="s") as writer:
        writer.add(smooth_jpeg(0), 0, "a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_label_out_of_range_refused(tmp_path):
    with (
        pytest.raises(TopofrError, match=r"s: b: label 3 out of range \(num_classes 2\)"),
        PackedWriter(tmp_path / "p", source="s") as writer,
    ):
        writer.add(smooth_jpeg(0), 0, "a")
        writer.add(smooth_jpeg(1), 3, "b")
        writer.finish({"num_classes": 2})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(TopofrError, match="already exists"):
        PackedWriter(out, source="s")
    with pytest.raises(TopofrError, match="was not written by topofr"):
        PackedWriter(out, source="s", overwrite=True)  # a folder of the user's: never replaced
    (out / "meta.json").write_text('{"format": "topofr-packed"}')  # an earlier packed set
    with PackedWriter(out, source="s", overwrite=True) as writer:
        writer.add(smooth_jpeg(0), 0, "a")
        writer.finish()
    assert not (out / "old").exists() and len(open_dataset(out)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_empty_and_undecodable_refused(tmp_path):
    with pytest.raises(TopofrError, match="no images"), PackedWriter(tmp_path / "p", source="s") as writer:
        writer.finish()
    with (
        pytest.raises(TopofrError, match="s: bad: not a decodable image"),
        PackedWriter(tmp_path / "p", source="s") as writer,
    ):
        writer.add(b"garbage", 0, "bad")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_index_named(tmp_path):
    out = tmp_path / "p"
    with PackedWriter(out, source="s") as writer:
        writer.add(smooth_jpeg(0), 0, "a")
        writer.add(smooth_jpeg(1), 1, "b")
        writer.finish()
    shard = out / shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TopofrError, match=r"index\.parquet: row 1: offset\+length past the end"):
        open_dataset(out)
