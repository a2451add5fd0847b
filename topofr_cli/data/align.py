"""Five-point face alignment onto the ArcFace template (REFERENCE §3.4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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
    """Warp with the forward 2x3 `matrix` (input → output coordinates): bilinear, rounded, black outside.

    Pixel centres sit at integer coordinates, as in OpenCV's warpAffine (which the landmark
    conventions assume). Done in numpy: PIL's 8-bit bilinear truncates, darkening crops by ~0.5 level.
    """
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    # One ring of zeros around the image makes samples straddling the border fade to black.
    padded = np.pad(np.asarray(rgb, dtype=np.float64), ((1, 1), (1, 1), (0, 0)))
    source_x, source_y = source_x + 1.0, source_y + 1.0
    inside = (source_x >= 0) & (source_y >= 0) & (source_x <= padded.shape[1] - 1) & (source_y <= padded.shape[0] - 1)
    x0 = np.clip(np.floor(source_x), 0, padded.shape[1] - 2).astype(np.int64)
    y0 = np.clip(np.floor(source_y), 0, padded.shape[0] - 2).astype(np.int64)
    fx = np.clip(source_x - x0, 0.0, 1.0)[..., None]
    fy = np.clip(source_y - y0, 0.0, 1.0)[..., None]
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    warped = (top * (1 - fy) + bottom * fy) * inside[..., None]
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8)


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
