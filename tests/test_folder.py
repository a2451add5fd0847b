"""Image folders: one sub-folder per identity, sorted, read back byte for byte."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from writers.rec_writer import smooth_jpeg

from topofr_cli.data import ImageFolderDataset, open_dataset
from topofr_cli.errors import TopofrError


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root, layout: dict[str, list[str]]) -> dict[str, bytes]:
    written = {}
    for n, (identity, names) in enumerate(layout.items()):
        (root / identity).mkdir(parents=True)
        for m, name in enumerate(names):
            data = _png(10 * n + m) if name.endswith(".png") else smooth_jpeg(10 * n + m)
            (root / identity / name).write_bytes(data)
            written[f"{identity}/{name}"] = data
    return written


def test_sorted_identities_and_images(tmp_path):
    written = make_folder(tmp_path, {"zed": ["b.jpg", "a.png"], "amy": ["1.jpeg"], "bob": ["x.JPG", "y.jpg"]})
    (tmp_path / "bob" / "notes.txt").write_text("not an image")
    ds = open_dataset(tmp_path)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.identities == ["amy", "bob", "zed"] and ds.num_classes == 3
    assert [ds.source_key(i) for i in range(len(ds))] == [
        "amy/1.jpeg",
        "bob/x.JPG",
        "bob/y.jpg",
        "zed/a.png",
        "zed/b.jpg",
    ]
    assert ds.labels.tolist() == [0, 1, 1, 2, 2]
    for i in range(len(ds)):
        assert ds.encoded(i) == written[ds.source_key(i)]
        pixels, label = ds[i]
        expected = np.asarray(Image.open(tmp_path / ds.source_key(i)).convert("RGB"))
        np.testing.assert_array_equal(pixels, expected)
        assert label == ds.labels[i]


def test_empty_folder(tmp_path):
    with pytest.raises(TopofrError, match="no identity sub-folders"):
        open_dataset(tmp_path)
    (tmp_path / "someone").mkdir()
    with pytest.raises(TopofrError, match="no images in its identity sub-folders"):
        open_dataset(tmp_path)


def test_corrupt_image_named(tmp_path):
    make_folder(tmp_path, {"a": ["1.jpg"]})
    (tmp_path / "a" / "2.jpg").write_bytes(b"\xff\xd8\xff broken")
    ds = open_dataset(tmp_path)
    with pytest.raises(TopofrError, match=r"a/2\.jpg: not a decodable image"):
        ds[1]


def test_missing_path(tmp_path):
    with pytest.raises(TopofrError, match="no such file or directory"):
        open_dataset(tmp_path / "nope")
