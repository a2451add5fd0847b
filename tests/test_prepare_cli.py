"""`topofr prepare folder|rec|bin` through Typer's runner, including bad inputs (exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner
from writers.rec_writer import jpeg_with_magic, smooth_jpeg, write_rec

from topofr_cli.cli.app import app
from topofr_cli.data import open_dataset
from topofr_cli.data.align import ARCFACE_TEMPLATE
from topofr_cli.data.bins import read_bin
from topofr_cli.data.images import decode_image, encode_jpeg

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["prepare", *map(str, args)])


def _nothing_written(parent, name):
    return not any(name in p.name for p in parent.iterdir())


def test_prepare_rec_copies_bytes(tmp_path):
    images = [smooth_jpeg(i) for i in range(5)]
    images[2] = jpeg_with_magic(7, 24, copies=2)
    write_rec(tmp_path / "rec", images, [0, 2, 1, 2, 0], header=True, num_classes=4)
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "packed 5 images of 4 classes" in result.output
    ds = open_dataset(tmp_path / "out")
    assert ds.meta["num_classes"] == 4 and ds.labels.tolist() == [0, 2, 1, 2, 0]
    assert [ds.encoded(i) for i in range(5)] == images  # byte for byte, split record rejoined
    assert ds.source_key(2) == "train.rec:3"


def test_prepare_rec_corrupt_jpeg(tmp_path):
    images = [smooth_jpeg(0), smooth_jpeg(1)[:200], smooth_jpeg(2)]  # truncated JPEG
    write_rec(tmp_path / "rec", images, [0, 1, 1], header=False)
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 2
    assert "record train.rec:1: not a decodable image" in result.output
    assert _nothing_written(tmp_path, "out")
    result = invoke("rec", tmp_path / "rec", tmp_path / "out", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped 1 images" in result.output and "train.rec:1" in result.output
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == 2 and ds.meta["skipped"] == ["train.rec:1"]
    assert [ds.encoded(i) for i in range(2)] == [images[0], images[2]]


def test_prepare_rec_structural_errors(tmp_path):
    rec, idx = write_rec(tmp_path / "rec", [smooth_jpeg(i) for i in range(3)], [0, 1, 2], header=False)
    data = rec.read_bytes()
    rec.write_bytes(data[:-30])
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 2 and "truncated" in result.output and "key 2" in result.output
    assert len(result.output.strip().splitlines()) == 1
    rec.write_bytes(b"\x00" * 4 + data[4:])
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 2 and "wrong magic" in result.output
    assert _nothing_written(tmp_path, "out")


def test_prepare_rec_existing_output(tmp_path):
    write_rec(tmp_path / "rec", [smooth_jpeg(0)], [0], header=False)
    (tmp_path / "out").mkdir()
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 2 and "already exists" in result.output


def _face_folder(root):
    """Two identities; each photo is the template-frame crop placed by a known similarity, landmarks listed."""
    rows = []
    crops = {}
    for n, identity in enumerate(["ann", "ben"]):
        (root / identity).mkdir(parents=True)
        y, x = np.mgrid[0:112, 0:112]
        crop = np.stack([(x * 2 + 40 * n) % 256, (y * 2) % 256, np.full_like(x, 90 + 50 * n)], axis=2)
        crop = crop.astype(np.uint8)
        photo = np.zeros((160, 150, 3), dtype=np.uint8)
        photo[20:132, 30:142] = crop  # pure translation by (30, 20)
        (root / identity / "1.png").write_bytes(_png(photo))
        landmarks = ARCFACE_TEMPLATE + [30, 20]
        rows.append(f"{identity}/1.png," + " ".join(f"{v:.4f}" for v in landmarks.reshape(-1)))
        crops[identity] = crop
    return rows, crops


def _png(rgb):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepare_folder_plain_and_aligned(tmp_path):
    rows, crops = _face_folder(tmp_path / "faces")
    result = invoke("folder", tmp_path / "faces", tmp_path / "plain")
    assert result.exit_code == 0, result.output
    plain = open_dataset(tmp_path / "plain")
    assert plain.meta["identities"] == ["ann", "ben"] and plain.meta["image_size"] == [160, 150]
    assert plain.encoded(1) == (tmp_path / "faces" / "ben" / "1.png").read_bytes()

    (tmp_path / "lm.csv").write_text("path,points\n" + "\n".join(rows) + "\n")
    result = invoke("folder", tmp_path / "faces", tmp_path / "aligned", "--landmarks", tmp_path / "lm.csv")
    assert result.exit_code == 0, result.output
    aligned = open_dataset(tmp_path / "aligned")
    assert aligned.meta["image_size"] == [112, 112] and aligned.meta["aligned"] is True
    for i, identity in enumerate(["ann", "ben"]):
        pixels, label = aligned[i]
        assert label == i
        # Alignment undoes the translation; the only loss is the JPEG encode.
        reference = decode_image(encode_jpeg(crops[identity]))
        assert np.abs(pixels.astype(int) - reference).mean() < 1.0


def test_prepare_folder_bad_inputs(tmp_path):
    rows, _ = _face_folder(tmp_path / "faces")
    (tmp_path / "lm.csv").write_text(rows[0] + "\nben/1.png, 1 2 3\n")
    result = invoke("folder", tmp_path / "faces", tmp_path / "out", "--landmarks", tmp_path / "lm.csv")
    assert result.exit_code == 2 and "lm.csv line 2" in result.output and "got 3" in result.output
    (tmp_path / "lm.csv").write_text(rows[0] + "\n")
    result = invoke("folder", tmp_path / "faces", tmp_path / "out", "--landmarks", tmp_path / "lm.csv")
    assert result.exit_code == 2 and "ben/1.png" in result.output and "no row" in result.output
    result = invoke(
        "folder", tmp_path / "faces", tmp_path / "out", "--landmarks", tmp_path / "lm.csv", "--skip-bad"
    )
    assert result.exit_code == 0 and "skipped 1 images" in result.output
    assert len(open_dataset(tmp_path / "out")) == 1
    (tmp_path / "empty").mkdir()
    result = invoke("folder", tmp_path / "empty", tmp_path / "out2")
    assert result.exit_code == 2 and "no identity sub-folders" in result.output
    (tmp_path / "faces" / "ann" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    result = invoke("folder", tmp_path / "faces", tmp_path / "out3")
    assert result.exit_code == 2 and "ann/2.jpg: not a decodable image" in result.output
    assert _nothing_written(tmp_path, "out2") and _nothing_written(tmp_path, "out3")


def test_prepare_bin(tmp_path):
    (tmp_path / "set" / "imgs").mkdir(parents=True)
    files = [smooth_jpeg(i, size=40) for i in range(3)]
    for i, data in enumerate(files):
        (tmp_path / "set" / "imgs" / f"{i}.jpg").write_bytes(data)
    csv = tmp_path / "set" / "pairs.csv"
    csv.write_text("path1,path2,issame\nimgs/0.jpg,imgs/1.jpg,1\nimgs/1.jpg,imgs/2.jpg,0\n")
    result = invoke("bin", csv, tmp_path / "pairs.bin")
    assert result.exit_code == 0, result.output
    pairs = read_bin(tmp_path / "pairs.bin")
    assert pairs.images == [files[0], files[1], files[1], files[2]] and pairs.issame.tolist() == [True, False]
    result = invoke("bin", csv, tmp_path / "small.bin", "--size", 16)
    assert result.exit_code == 0 and decode_image(read_bin(tmp_path / "small.bin").images[3]).shape == (
        16,
        16,
        3,
    )

    csv.write_text("path1,path2,issame\nimgs/0.jpg,imgs/9.jpg,1\nimgs/1.jpg,imgs/2.jpg,0\n")
    result = invoke("bin", csv, tmp_path / "bad.bin")
    assert result.exit_code == 2 and "pairs.csv line 2" in result.output and "9.jpg" in result.output
    assert not (tmp_path / "bad.bin").exists()
    result = invoke("bin", csv, tmp_path / "skip.bin", "--skip-bad")
    assert result.exit_code == 0 and "skipped 1 pairs" in result.output
    assert read_bin(tmp_path / "skip.bin").issame.tolist() == [False]
    csv.write_text("imgs/0.jpg,imgs/1.jpg\n")
    result = invoke("bin", csv, tmp_path / "bad.bin")
    assert result.exit_code == 2 and "line 1: expected 3 columns" in result.output
    assert _nothing_written(tmp_path, "bad.bin")


def test_meta_json_is_plain_json(tmp_path):
    write_rec(tmp_path / "rec", [smooth_jpeg(0), smooth_jpeg(1)], [0, 1], header=False)
    assert invoke("rec", tmp_path / "rec", tmp_path / "out", "--no-verify").exit_code == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["num_images"] == 2 and meta["source"].endswith("train.rec")


def test_prepare_rec_label_out_of_range_and_bad_idx(tmp_path):
    rec, idx = write_rec(
        tmp_path / "rec", [smooth_jpeg(i) for i in range(3)], [0, 3, 1], header=False, num_classes=2
    )
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert result.exit_code == 2 and "key 1: label 3 out of range" in result.output
    (tmp_path / "rec" / "property").unlink()
    lines = idx.read_text().splitlines()
    lines[2] = f"2\t{rec.stat().st_size + 4}"
    idx.write_text("\n".join(lines) + "\n")
    result = invoke("rec", tmp_path / "rec", tmp_path / "out")
    assert (
        result.exit_code == 2
        and "train.idx line 3 (key 2)" in result.output
        and "past the end" in result.output
    )
    assert _nothing_written(tmp_path, "out")
