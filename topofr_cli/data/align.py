"""Five-point face alignment onto the ArcFace template (REFERENCE §3.4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from topofr_cli.errors import TopofrError

# REFERENCE §3.4: the 96x112 template points with x + 8, i.e. for a 112x112 crop. Pixel centres at
# integer coordinates (the OpenCV convention the landmark files use).
ARCFACE_TEMPLATE = np.array([
    [30.2946 + 8.0, 51.6963],
    [65.5318 + 8.0, 51.5014],
    [48.0252 + 8.0, 71.7366],
    [33.5493 + 8.0, 92.3655],
    [62.7299 + 8.0, 92.2041],
], dtype=np.float64)


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping source → target.

    Umeyama (1991): returns the 2x3 matrix M with target ≈ M @ [x, y, 1]. Reflections are excluded.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"estimate_similarity expects two [n, 2] point sets, got {source.shape}, {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        signs[1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    source_variance = (source_centred ** 2).sum() / len(source)
    if source_variance == 0:
        raise ValueError("estimate_similarity: all source points coincide")
    scale = float((singular * signs).sum() / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """Warp with the forward 2x3 `matrix` (input → output coordinates), bilinear, black outside."""
    forward = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    # PIL samples at pixel centres (x + 0.5); shift so integer coordinates are centres on both sides.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    pil_inverse = shift @ inverse @ unshift
    coefficients = tuple(pil_inverse[:2].reshape(-1))
    warped = Image.fromarray(np.ascontiguousarray(rgb)).transform(
        (width, height), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR, fillcolor=0)
    return np.asarray(warped, dtype=np.uint8)


def template_for(size: int) -> np.ndarray:
    """The ArcFace template scaled to a size x size crop (the reference is 112)."""
    return ARCFACE_TEMPLATE * (size / 112.0)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Map the 5 landmarks (eyes, nose, mouth corners; [5, 2] x, y) onto the template; size x size RGB."""
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = estimate_similarity(landmarks, template_for(size))
    return warp_affine(rgb, matrix, size, size)


def read_landmarks(csv_path: str | Path, root: str | Path) -> dict[str, np.ndarray]:
    """Landmark rows `path, x1 y1 ... x5 y5` (commas and/or spaces) → {path relative to root: [5, 2]}.

    Paths may be relative to `root` or absolute inside it. A first line whose coordinates are not
    numbers is taken as a header.
    """
    csv_path, root = Path(csv_path), Path(root)
    landmarks: dict[str, np.ndarray] = {}
    with open(csv_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
            try:
                values = [float(f) for f in fields[1:]]
            except ValueError:
                if number == 1:
                    continue  # header
                raise TopofrError(f"{csv_path} line {number}: coordinates must be numbers") from None
            if len(values) != 10:
                raise TopofrError(f"{csv_path} line {number}: expected a path and 10 coordinates "
                                  f"(x1 y1 ... x5 y5), got {len(values)}")
            if not np.all(np.isfinite(values)):
                raise TopofrError(f"{csv_path} line {number}: coordinates must be finite")
            path = Path(fields[0])
            if path.is_absolute():
                try:
                    path = path.relative_to(root)
                except ValueError:
                    raise TopofrError(f"{csv_path} line {number}: {path} is not inside {root}") from None
            key = path.as_posix()
            if key in landmarks:
                raise TopofrError(f"{csv_path} line {number}: second row for {key}")
            landmarks[key] = np.asarray(values, dtype=np.float64).reshape(5, 2)
    if not landmarks:
        raise TopofrError(f"{csv_path}: no landmark rows")
    return landmarks
