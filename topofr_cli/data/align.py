"""Five-point face alignment onto the ArcFace template (docs/method.md §3.4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from topofr_cli.errors import TopofrError

# docs/method.md §3.4: the 96x112 template points with x + 8, i.e. for a 112x112 crop. Pixel centres at
# integer coordinates (the OpenCV convention the landmark files use).
ARCFACE_TEMPLATE = np.array(
    [
        [30.2946 + 8.0, 51.6963],
        [65.5318 + 8.0, 51.5014],
        [48.0252 + 8.0, 71.7366],
        [33.5493 + 8.0, 92.3655],
        [62.7299 + 8.0, 92.2041],
    ],
    dtype=np.float64,
)


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping source → target.

    Umeyama (1991): returns the 2x3 matrix M with target ≈ M @ [x, y, 1]. Reflections are excluded.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(
            f"estimate_similarity expects two [n, 2] point sets, got {source.shape}, {target.shape}"
        )
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        signs[1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance == 0:
        raise ValueError("estimate_similarity: all source points coincide")
    scale = float((singular * signs).sum() / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def opencv_available() -> bool:
    """Whether `cv2` imports (the `detect` extra installs opencv-python-headless)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def warp_affine(
    rgb: np.ndarray, matrix: np.ndarray, height: int, width: int, backend: str = "auto"
) -> np.ndarray:
    """Warp with the forward 2x3 `matrix` (input → output coordinates): bilinear, rounded, black outside.

    `backend` is "opencv" (cv2.warpAffine, what insightface's norm_crop calls), "numpy", or "auto"
    (OpenCV when installed). The two agree within 1 grey level: OpenCV quantises the bilinear
    weights to 1/32 of a pixel, numpy does not.
    """
    if backend not in ("auto", "numpy", "opencv"):
        raise ValueError(f"warp backend must be auto, numpy or opencv, got {backend!r}")
    if backend == "opencv" or (backend == "auto" and opencv_available()):
        import cv2

        return cv2.warpAffine(
            np.ascontiguousarray(rgb),
            np.asarray(matrix, dtype=np.float64),
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return _warp_numpy(np.asarray(rgb), matrix, height, width)


def _warp_numpy(rgb: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear warp with pixel centres at integer coordinates (OpenCV's convention).

    Only the four neighbours of each output pixel are read from the uint8 image (no float copy of a
    whole photo); a neighbour outside the image counts as black, so crops fade to black at the border.
    PIL is not used: its 8-bit bilinear truncates, darkening crops by ~0.5 level.
    """
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    columns, rows = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)[:, None]
    source_x = inverse[0, 0] * columns + (inverse[0, 1] * rows + inverse[0, 2])
    source_y = inverse[1, 0] * columns + (inverse[1, 1] * rows + inverse[1, 2])
    x0, y0 = np.floor(source_x), np.floor(source_y)
    fx, fy = (source_x - x0).astype(np.float32), (source_y - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    image_height, image_width = rgb.shape[:2]
    flat = rgb.reshape(image_height * image_width, -1)
    warped = np.zeros((height * width, flat.shape[1]), dtype=np.float32)
    for dy, dx, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        column, row = x0 + dx, y0 + dy
        inside = (column >= 0) & (column < image_width) & (row >= 0) & (row < image_height)
        index = np.where(inside, row * image_width + column, 0).reshape(-1)
        # np.take is several times faster than fancy indexing for gathering whole pixel rows.
        warped += np.take(flat, index, axis=0) * np.where(inside, weight, 0.0).reshape(-1, 1)
    warped = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
    return warped.reshape(height, width, *rgb.shape[2:])


def template_for(size: int) -> np.ndarray:
    """The ArcFace template for a size x size crop, in insightface's convention (`norm_crop`).

    A multiple of 112 scales the 112 template; a multiple of 128 scales it by size/128 and shifts x
    by 8·size/128 (so 128 keeps the 112 face and adds an 8-pixel margin each side, not a bigger face).
    """
    if size > 0 and size % 112 == 0:
        return ARCFACE_TEMPLATE * (size / 112.0)
    if size > 0 and size % 128 == 0:
        ratio = size / 128.0
        return ARCFACE_TEMPLATE * ratio + [8.0 * ratio, 0.0]
    raise ValueError(f"crop size {size}: must be a multiple of 112 or of 128 (insightface's conventions)")


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 similarity taking the 5 landmarks ([5, 2] x, y) onto the template for `size`."""
    return estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template_for(size))


class LandmarkError(ValueError):
    """Landmarks that cannot place a face in this image, or a crop that holds no face; says which."""


# Landmarks may lie a little outside the photo (a face cut by its edge) but not further than this
# fraction of the photo's larger side: beyond it they belong to another image or are garbage.
LANDMARK_MARGIN = 0.25
# Five points closer together than this (pixels) cannot give a face: the crop would enlarge a blur.
MIN_LANDMARK_SPREAD = 2.0
# An aligned crop whose pixels vary less than this (standard deviation, 0-255) shows no face.
NEAR_CONSTANT_STD = 2.0


def check_landmarks(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """The landmarks as float64 [5, 2] once they are finite, lie in or near the `height` x `width`
    image and are spread apart; LandmarkError saying what is wrong otherwise."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size != 10:
        raise LandmarkError(f"expected 5 landmarks (10 numbers), got {points.size}")
    points = points.reshape(5, 2)
    if not np.isfinite(points).all():
        raise LandmarkError("landmarks are not finite numbers")
    margin = LANDMARK_MARGIN * max(height, width)
    low, high = points.min(axis=0), points.max(axis=0)
    if low.min() < -margin or high[0] > width + margin or high[1] > height + margin:
        raise LandmarkError(
            f"landmarks span x {low[0]:.4g}..{high[0]:.4g}, y {low[1]:.4g}..{high[1]:.4g}, "
            f"outside the {width} x {height} image"
        )
    spread = float(np.max(high - low))
    if spread < MIN_LANDMARK_SPREAD:
        raise LandmarkError(f"landmarks lie within {spread:.3g} pixels of each other")
    return points


def is_near_constant(crop: np.ndarray) -> bool:
    """Whether an aligned crop is (nearly) one colour: landmarks that missed the face."""
    return float(np.asarray(crop, dtype=np.float32).std()) < NEAR_CONSTANT_STD


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, backend: str = "auto") -> np.ndarray:
    """Map the 5 landmarks (eyes, nose, mouth corners; [5, 2] x, y) onto the template; size x size RGB.

    LandmarkError (a ValueError) for landmarks far outside the image, not finite or all in one spot,
    and for a crop that comes out (nearly) one colour while the photo is not."""
    points = check_landmarks(landmarks, rgb.shape[0], rgb.shape[1])
    crop = warp_affine(rgb, alignment_matrix(points, size), size, size, backend=backend)
    if is_near_constant(crop) and not is_near_constant(rgb):
        raise LandmarkError(
            f"the aligned crop is nearly one colour (pixel spread {crop.std():.2f}); the landmarks miss the face"
        )
    return crop


def read_landmarks(csv_path: str | Path, root: str | Path) -> dict[str, np.ndarray]:
    """Landmark rows `path, x1 y1 ... x5 y5` (commas and/or spaces) → {path relative to root: [5, 2]}.

    Paths may be relative to `root` or absolute inside it. A first line whose coordinates are not
    numbers is taken as a header.
    """
    csv_path, root = Path(csv_path), Path(root)
    try:
        # utf-8-sig: spreadsheet programs start CSVs with a byte-order mark
        lines = csv_path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise TopofrError(f"{csv_path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise TopofrError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    return _landmark_rows(csv_path, root, lines)


def _landmark_rows(csv_path: Path, root: Path, lines: list[str]) -> dict[str, np.ndarray]:
    landmarks: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines, start=1):
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
            raise TopofrError(
                f"{csv_path} line {number}: expected a path and 10 coordinates "
                f"(x1 y1 ... x5 y5), got {len(values)}"
            )
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
