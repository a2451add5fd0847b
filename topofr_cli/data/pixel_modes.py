"""Every pixel mode PIL opens, made into 8-bit RGB the way it was meant to look, or refused.

PIL's own `convert("RGB")` clips rather than scales: a 16-bit PNG comes out almost all white and a
float TIFF almost all black. Here:

- 16-bit grey (`I;16`, `I;16B`, `I;16L`, and `I` whose values lie in 0..65535) is scaled by 255/65535;
  `I` values outside that range have no known scale and are refused.
- float grey (`F`) in 0..1 is scaled by 255, in 0..255 kept; anything else (NaN, inf, negative,
  above 255) is refused.
- alpha (`RGBA`, `LA`, `PA`, `RGBa`, palette transparency) is dropped: the colour channels are kept
  as stored, as OpenCV's `imread` reads such files for face recognition tools.
- palette, 1-bit, CMYK, YCbCr, HSV and LAB use PIL's colour conversions (colorimetric for LAB).
- EXIF orientation (tag 274, values 1-8) is applied, so a phone photo stored sideways is upright.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from topofr_cli.errors import TopofrError

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_WITH_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_BY_PIL = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"})


class PixelModeError(TopofrError):
    """The image's pixels cannot be made into correct 8-bit RGB; the message says why."""


def to_rgb8(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] of a loaded PIL image, in its EXIF orientation."""
    return orient(_colour(image), exif_orientation(image))


def _colour(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)  # a copy: torch warns on read-only arrays
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey(_scale_sixteen_bit(np.asarray(image), mode))
    if mode == "F":
        return _grey(_scale_float(np.asarray(image)))
    if mode in _WITH_ALPHA or (mode == "P" and "transparency" in image.info):
        # through RGBA: PIL warns when it drops a palette's transparency on its own
        return np.array(image.convert("RGBA"), dtype=np.uint8)[:, :, :3].copy()
    if mode in _BY_PIL:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    raise PixelModeError(f"pixel mode {mode!r} has no known conversion to 8-bit RGB")


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[:, :, None], 3, axis=2)


def _scale_sixteen_bit(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise PixelModeError(
            f"{mode} pixel values span {values.min()}..{values.max()}, outside 0..65535 (scale unknown)"
        )
    return ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)


def _scale_float(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise PixelModeError("float pixel values include NaN or infinity")
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise PixelModeError(
            f"float pixel values span {low:.6g}..{high:.6g}, neither 0..1 nor 0..255 (scale unknown)"
        )
    scale = 255.0 if high <= 1.0 else 1.0
    return np.rint(values * scale).astype(np.uint8)


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8 (1 = stored upright); 1 when absent or not a valid value."""
    if "exif" not in image.info and image.format != "TIFF":  # TIFF keeps it among its own tags
        return 1  # parsing nothing costs a sixth of a 112 x 112 JPEG decode
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are still there, stored upright
        return 1
    return value if type(value) is int and 1 <= value <= 8 else 1


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) once `orientation` is applied: 5-8 swap the axes."""
    return (height, width) if orientation >= 5 else (width, height)


def orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation to [H, W, C] (the transform that makes the stored pixels upright)."""
    if orientation == 1:
        return rgb
    turned = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # upside down
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.transpose(1, 0, 2),  # mirrored about the main diagonal
        6: lambda a: np.rot90(a, k=-1),  # stored turned left: turn right
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored about the anti-diagonal
        8: lambda a: np.rot90(a, k=1),  # stored turned right: turn left
    }[orientation](rgb)
    return np.ascontiguousarray(turned)
