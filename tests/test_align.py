"""Five-point alignment: identity on the template, exact inversion of known similarities, least-squares truth."""

from __future__ import annotations

import numpy as np
import pytest

from topofr_cli.data.align import (
    ARCFACE_TEMPLATE,
    align_face,
    estimate_similarity,
    read_landmarks,
    template_for,
    warp_affine,
)
from topofr_cli.errors import TopofrError


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([scale * rotation, [[tx], [ty]]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [128 + 100 * np.sin(x / 9.0 + c) * np.cos(y / 11.0 - c) for c in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 255).round().astype(np.uint8)


def test_template_values_and_identity():
    assert ARCFACE_TEMPLATE[0].tolist() == pytest.approx([38.2946, 51.6963])  # §3.4: x + 8
    matrix = estimate_similarity(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-10)
    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    aligned = align_face(image, ARCFACE_TEMPLATE)
    assert aligned.shape == (112, 112, 3)
    np.testing.assert_array_equal(aligned, image)


def test_known_similarity_is_inverted():
    forward = _similarity(1.7, 20.0, 80.0, 10.0)  # template frame → photo frame
    landmarks = _apply(forward, ARCFACE_TEMPLATE)
    estimated = estimate_similarity(landmarks, ARCFACE_TEMPLATE)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    np.testing.assert_allclose(estimated, inverse, atol=1e-9)
    # Pixels: render a face crop into a bigger photo with `forward`, align it back.
    crop = _smooth_image(112, 112)
    photo = warp_affine(crop, forward, 300, 300)
    back = align_face(photo, landmarks)
    interior = (slice(10, 102), slice(10, 102))
    difference = np.abs(back[interior].astype(int) - crop[interior])
    assert difference.mean() < 0.2 and difference.max() <= 2  # two bilinear resamplings, rounded, no bias


def test_matches_linear_least_squares_on_noisy_points():
    rng = np.random.default_rng(3)
    source = _apply(_similarity(0.8, -35.0, 5.0, 40.0), ARCFACE_TEMPLATE) + rng.normal(0, 1.5, (5, 2))
    # Independent truth: a similarity is linear in (a, b, tx, ty): x' = a x − b y + tx, y' = b x + a y + ty.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(source, ARCFACE_TEMPLATE, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    np.testing.assert_allclose(
        estimate_similarity(source, ARCFACE_TEMPLATE), [[a, -b, tx], [b, a, ty]], atol=1e-9
    )


def test_mirrored_points_give_a_rotation_not_a_reflection():
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    matrix = estimate_similarity(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_warp_shifts_by_whole_pixels_and_fills_black():
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    shifted = warp_affine(image, np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -3.0]]), 20, 30)  # out = in + (2, -3)
    np.testing.assert_array_equal(shifted[:17, 2:], image[3:, :28])
    assert shifted[:, :2].max() == 0 and shifted[17:].max() == 0


def test_read_landmarks(tmp_path):
    csv = tmp_path / "lm.csv"
    points = " ".join(f"{v:.3f}" for v in ARCFACE_TEMPLATE.reshape(-1))
    csv.write_text(
        f"path,x1 y1 x2 y2 x3 y3 x4 y4 x5 y5\nbob/1.jpg, {points}\n{tmp_path}/amy/2.jpg,{points}\n"
    )
    landmarks = read_landmarks(csv, tmp_path)
    assert sorted(landmarks) == ["amy/2.jpg", "bob/1.jpg"]
    np.testing.assert_allclose(landmarks["bob/1.jpg"], ARCFACE_TEMPLATE, atol=1e-3)
    csv.write_text(f"bob/1.jpg, {points}\nbob/2.jpg, 1 2 3 4 5 6 7 8 9\n")
    with pytest.raises(TopofrError, match=r"lm\.csv line 2: expected a path and 10 coordinates .* got 9"):
        read_landmarks(csv, tmp_path)


def test_template_sizes_follow_insightface():
    # norm_crop: a multiple of 112 scales the template; a multiple of 128 scales by size/128 and adds 8·size/128 to x.
    assert template_for(112)[0].tolist() == pytest.approx([38.2946, 51.6963])
    assert template_for(128)[0].tolist() == pytest.approx([46.2946, 51.6963])
    assert template_for(224)[4].tolist() == pytest.approx([141.4598, 184.4082])
    assert template_for(256)[1].tolist() == pytest.approx([(73.5318 + 8) * 2, 51.5014 * 2])
    with pytest.raises(ValueError, match="multiple of 112 or of 128"):
        template_for(100)


def _norm_crop_transcribed(cv2, image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """insightface `norm_crop`, re-derived: its template convention, a least-squares similarity, cv2.warpAffine."""
    ratio, shift = (size / 112.0, 0.0) if size % 112 == 0 else (size / 128.0, 8.0 * size / 128.0)
    target = ARCFACE_TEMPLATE * ratio + [shift, 0.0]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(landmarks, target, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return cv2.warpAffine(image, np.array([[a, -b, tx], [b, a, ty]]), (size, size), borderValue=0.0)


@pytest.mark.parametrize("size", [112, 128])
@pytest.mark.parametrize("backend", ["numpy", "opencv"])
def test_matches_insightface_norm_crop(size, backend):
    cv2 = pytest.importorskip(
        "cv2", reason="opencv-python-headless is not installed (pip install topofr[detect])"
    )
    rng = np.random.default_rng(size)
    photo = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    photo = cv2.GaussianBlur(photo, (0, 0), 1.5)  # texture at several scales, not only pixel noise
    for trial in range(4):  # the last trials put part of the crop outside the photo (black border)
        forward = _similarity(
            rng.uniform(0.6, 2.2), rng.uniform(-40, 40), 60 + 60 * trial, rng.uniform(-30, 90)
        )
        landmarks = _apply(forward, ARCFACE_TEMPLATE) + rng.normal(0, 1.0, (5, 2))
        ours = align_face(photo, landmarks, size=size, backend=backend)
        truth = _norm_crop_transcribed(cv2, photo, landmarks, size)
        assert ours.shape == truth.shape == (size, size, 3)
        assert np.abs(ours.astype(int) - truth).max() <= 1
