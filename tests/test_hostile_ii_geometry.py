"""Geometry that cannot be right (issue 19, class 5), landmark CSV encodings (class 10) and worker
clamps (class 7): one line or a flagged crop, never a garbage crop packed in silence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.data.align import ARCFACE_TEMPLATE, LandmarkError, align_face, check_landmarks
from topofr_cli.data.detect import align_faces
from topofr_cli.data.workers import clamp_workers, loader_jobs, usable_cores, workers_for_cores

GOOD = ARCFACE_TEMPLATE + [30, 20]  # a face inside a 200 x 240 photo


def photo(seed: int = 0, height: int = 200, width: int = 240) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 150, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("points", "fragment"),
    [
        (GOOD * 1e300, "outside the 240 x 200 image"),
        (GOOD + 5000, "outside the 240 x 200 image"),
        (GOOD - 200, "outside the 240 x 200 image"),
        (np.where(np.eye(5, 2, dtype=bool), np.nan, GOOD), "not finite"),
        (np.where(np.eye(5, 2, dtype=bool), np.inf, GOOD), "not finite"),
        (np.full((5, 2), 50.0) + [[0, 0], [0.5, 0], [0, 0.5], [1, 1], [0.2, 0.3]], "within 1 pixels"),
    ],
)
def test_absurd_landmarks_are_refused_without_numpy_warnings(points, fragment):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow or invalid-value RuntimeWarning fails the test
        with pytest.raises(LandmarkError, match=fragment):
            align_face(photo(), points)


def test_landmarks_a_little_outside_the_photo_still_align():
    # the face cut by the left edge: 20 px beyond it is within the 25 % margin (60 px here)
    crop = align_face(photo(), GOOD - [60, 0])
    assert crop.shape == (112, 112, 3)
    assert check_landmarks(GOOD - [60, 0], 200, 240).shape == (5, 2)


def test_a_crop_of_one_colour_from_a_textured_photo_is_refused():
    rgb = photo()
    rgb[:100, :120] = 90  # a flat corner: landmarks placed inside it give a flat crop
    small = ARCFACE_TEMPLATE * 0.5 + [5, 5]  # spread 25 px, all inside the flat corner
    with pytest.raises(LandmarkError, match="nearly one colour"):
        align_face(rgb, small)
    flat = np.full((200, 240, 3), 90, np.uint8)  # a flat photo is what it is: aligned, not refused
    assert align_face(flat, GOOD).std() == 0


class _FixedDetector:
    def __init__(self, points):
        self.points = points

    def detect(self, rgb):
        from topofr_cli.data.detect import DetectedFace

        return [DetectedFace(box=np.array([0.0, 0.0, 10.0, 10.0]), score=1.0, landmarks=self.points)]


def test_align_faces_gives_no_face_for_absurd_detector_landmarks():
    crops, landmarks = align_faces([photo(), photo(1)], detector=_FixedDetector(GOOD * 1e300))
    assert crops.shape == (2, 112, 112, 3) and not crops.any()
    assert np.isnan(landmarks).all()
    crops, landmarks = align_faces([photo()], detector=_FixedDetector(GOOD))
    assert crops.std() > 10 and np.allclose(landmarks[0], GOOD)


def _faces(tmp_path):
    for identity in ("ann", "ben"):
        (tmp_path / "faces" / identity).mkdir(parents=True)
        Image.fromarray(photo(len(identity))).save(tmp_path / "faces" / identity / "1.png")


def _csv_rows(points_by_identity):
    return [
        f"{identity}/1.png," + " ".join(f"{v:.6g}" for v in np.asarray(points).reshape(-1))
        for identity, points in points_by_identity.items()
    ]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Warning" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_prepare_folder_refuses_landmarks_times_1e300(tmp_path):
    _faces(tmp_path)
    rows = _csv_rows({"ann": GOOD, "ben": GOOD * 1e300})
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    result = invoke(
        "prepare", "folder", tmp_path / "faces", tmp_path / "out", "--landmarks", tmp_path / "lm.csv"
    )
    one_error(result, "ben/1.png", "outside the 240 x 200 image")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("encode", "ok"),
    [
        (lambda text: b"\xef\xbb\xbf" + text.encode(), True),  # BOM from a spreadsheet program
        (lambda text: "path,x1\n".encode("utf-16") + text.encode("utf-16")[2:], False),
        (lambda text: b"caf\xe9 header\n" + text.encode(), False),  # Latin-1
    ],
)
def test_landmarks_csv_encodings(tmp_path, encode, ok):
    _faces(tmp_path)
    (tmp_path / "lm.csv").write_bytes(encode("\n".join(_csv_rows({"ann": GOOD, "ben": GOOD})) + "\n"))
    result = invoke(
        "prepare", "folder", tmp_path / "faces", tmp_path / "out", "--landmarks", tmp_path / "lm.csv"
    )
    if ok:
        assert result.exit_code == 0, result.output
    else:
        one_error(result, "lm.csv: not UTF-8 text (byte")


def test_worker_clamp_says_what_it_did():
    cores = usable_cores()
    assert clamp_workers(1000, 100, "--workers") == (
        min(100, cores),
        f"--workers 1000: using {min(100, cores)} worker{'s' if min(100, cores) > 1 else ''} "
        f"(at most one per job and per CPU core: 100 images, {cores} cores)",
    )
    assert clamp_workers(0, 100, "--workers") == (0, None)
    assert clamp_workers(1, 100, "--workers") == (1, None)
    assert clamp_workers(5, 3, "x")[0] == min(3, cores)
    assert loader_jobs(100, 32) == 4 and loader_jobs(0, 32) == 1
    assert workers_for_cores(cores) == (cores, None) and workers_for_cores(0) == (0, None)
    note = f"--workers {cores + 7}: using {cores} worker{'s' if cores > 1 else ''} (one per usable CPU core)"
    assert workers_for_cores(cores + 7) == (cores, note)


def test_prepare_synthetic_with_1000_workers_uses_what_helps(tmp_path):
    result = invoke(
        "prepare",
        "synthetic",
        tmp_path / "syn",
        "--identities",
        3,
        "--images-per-identity",
        2,
        "--heldout-identities",
        2,
        "--pairs",
        20,
        "--workers",
        1000,
    )
    assert result.exit_code == 0, result.output
    cores = usable_cores()
    assert f"--workers 1000: using {min(5, cores)} worker" in result.output
