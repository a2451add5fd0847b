"""A toy detector for tests that need no detection package: a "face" is five white dots on a darker photo.

The dots are the five landmarks (eyes above, nose, mouth corners below); `dot_photo` draws them.
`make` is the factory used as `--detector writers.dot_detector:make`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from topofr_cli.data.detect import DetectedFace


class DotDetector:
    name = "dots"

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        labels, count = ndimage.label(rgb.min(axis=2) > 240)
        if count != 5:
            return []
        centres = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, range(1, 6)))[:, ::-1]
        by_height = centres[np.argsort(centres[:, 1])]
        eyes, nose, mouth = by_height[:2], by_height[2], by_height[3:]
        points = np.vstack([eyes[np.argsort(eyes[:, 0])], nose, mouth[np.argsort(mouth[:, 0])]])
        box = np.concatenate([points.min(0) - 20, points.max(0) + 20])
        return [DetectedFace(box=box, score=1.0, landmarks=points)]


def make() -> DotDetector:
    return DotDetector()


def dot_photo(landmarks: np.ndarray | None, height: int = 200, width: int = 240, seed: int = 0) -> bytes:
    """PNG of a dim textured photo with a 3x3 white dot centred on each (integer) landmark."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(20, 150, (height, width, 3), dtype=np.uint8)
    for x, y in np.asarray(landmarks if landmarks is not None else [], dtype=int).reshape(-1, 2):
        rgb[y - 1 : y + 2, x - 1 : x + 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()
