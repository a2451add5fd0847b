"""Face detection behind a small interface: a detector finds faces with a box, a score and the five
ArcFace landmarks; one face per photo is picked and aligned (docs/method.md §3.4).

Any object with `name` and `detect(rgb) -> list[DetectedFace]` is a detector. Built in: "dlib-hog",
"dlib-hog-small" (faces down to ~40 px, 3x slower) and "dlib-cnn" (topofr_cli/data/detect_dlib.py). Another one (e.g. insightface's SCRFD, if you have
its models) plugs in through `register_detector`, or on the command line as `--detector
package.module:factory`, a callable taking no arguments that returns the detector.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from topofr_cli.errors import TopofrError

PICKS = ("largest", "central")


@dataclass(frozen=True)
class DetectedFace:
    """box: [4] x0, y0, x1, y1 (pixels, x1/y1 exclusive); landmarks: [5, 2] x, y of the image-left eye
    centre, image-right eye centre, nose tip, image-left and image-right mouth corners."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


@runtime_checkable
class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...  # uint8 [H, W, 3] RGB in


def _dlib_hog() -> FaceDetector:
    from topofr_cli.data.detect_dlib import DlibDetector

    return DlibDetector("hog")


def _dlib_hog_small() -> FaceDetector:
    from topofr_cli.data.detect_dlib import DlibDetector

    return DlibDetector("hog", upsample=1)


def _dlib_cnn() -> FaceDetector:
    from topofr_cli.data.detect_dlib import DlibDetector

    return DlibDetector("cnn")


_REGISTRY: dict[str, Callable[[], FaceDetector]] = {
    "dlib-hog": _dlib_hog,
    "dlib-hog-small": _dlib_hog_small,
    "dlib-cnn": _dlib_cnn,
}
DEFAULT_DETECTOR = "dlib-hog"


def register_detector(name: str, factory: Callable[[], FaceDetector]) -> None:
    """Make `make_detector(name)` (and `--detector name`) build a detector with `factory()`."""
    _REGISTRY[name] = factory


def detector_names() -> list[str]:
    return sorted(_REGISTRY)


def make_detector(name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """A registered detector by name, or `package.module:factory` imported and called."""
    if name in _REGISTRY:
        detector = _REGISTRY[name]()
    elif ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise TopofrError(f"--detector {name}: cannot import it ({exc})") from None
        detector = factory()
    else:
        raise TopofrError(
            f"--detector {name}: unknown (built in: {', '.join(detector_names())}; or package.module:factory)"
        )
    if not isinstance(detector, FaceDetector):
        raise TopofrError(f"--detector {name}: {type(detector).__name__} has no name/detect(rgb)")
    return detector


def pick_face(faces: list[DetectedFace], height: int, width: int, pick: str = "largest") -> int:
    """Index of the face to keep: the largest box, or the box whose centre is nearest the photo's centre."""
    if pick not in PICKS:
        raise TopofrError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    if not faces:
        raise ValueError("pick_face: no faces")
    boxes = np.stack([face.box for face in faces])
    if pick == "largest":
        return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return int(np.argmin(np.linalg.norm(centres - [width / 2, height / 2], axis=1)))


def align_faces(
    images: Iterable[np.ndarray],
    *,
    detector: FaceDetector | str = DEFAULT_DETECTOR,
    pick: str = "largest",
    size: int = 112,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect, pick and align one face per photo.

    Returns (crops uint8 [N, size, size, 3], landmarks float64 [N, 5, 2] in photo pixels). A photo
    without a face, or whose detected landmarks cannot place one (`align.LandmarkError`: far outside
    the photo, not finite, a one-colour crop), gives a black crop and NaN landmarks, so rows stay
    aligned with the input.
    """
    from topofr_cli.data.align import LandmarkError, align_face

    if isinstance(detector, str):
        detector = make_detector(detector)
    crops, landmarks = [], []
    for rgb in images:
        rgb = np.asarray(rgb)
        faces = detector.detect(rgb)
        if not faces:
            crops.append(np.zeros((size, size, 3), dtype=np.uint8))
            landmarks.append(np.full((5, 2), np.nan))
            continue
        face = faces[pick_face(faces, rgb.shape[0], rgb.shape[1], pick)]
        try:
            crops.append(align_face(rgb, face.landmarks, size=size))
        except LandmarkError:
            crops.append(np.zeros((size, size, 3), dtype=np.uint8))
            landmarks.append(np.full((5, 2), np.nan))
            continue
        landmarks.append(face.landmarks)
    if not crops:
        return np.zeros((0, size, size, 3), dtype=np.uint8), np.zeros((0, 5, 2))
    return np.stack(crops), np.stack(landmarks)
