"""Image decoding and encoding: encoded bytes (JPEG/PNG/...) <-> uint8 RGB arrays.

Decoding gives the picture as it was meant to look (`pixel_modes`: 16-bit and float scaled, EXIF
orientation applied) or an ImageDecodeError; PIL's warnings never reach the user (its decompression
bomb warning fires below PIL's own limit but above ours, so the refusal that follows says it all)."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
from PIL import Image

from topofr_cli.data.pixel_modes import exif_orientation, oriented_size, to_rgb8
from topofr_cli.errors import TopofrError

# PIL reports some refusals through `logging` as well as by raising (TIFF: "More samples per pixel than
# can be decoded"); with no logging set up, Python prints them to stderr before our one line. A null
# handler keeps them for whoever configures logging, and off the terminal otherwise.
logging.getLogger("PIL").addHandler(logging.NullHandler())

# Decoding allocates 3 bytes per pixel whatever the file's size: a small compressed file can claim
# gigapixels. 64 Mpixels (an 8000 x 8000 photo, 192 MB decoded) is far above any face crop.
MAX_IMAGE_PIXELS = 1 << 26


class ImageDecodeError(TopofrError):
    """Raised for bytes that are not a decodable image. Callers add the file and record."""


def decode_image(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Decode an encoded image to uint8 RGB [H, W, 3].

    A 1-D uint8 array is treated as encoded bytes (how some `.bin` files store images); an
    [H, W, 3] uint8 array is already pixels and is returned as is; [H, W] grey is expanded.
    """
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"image array has dtype {data.dtype}, expected uint8")
        if data.ndim == 3 and data.shape[2] == 3:
            return data
        if data.ndim == 2:
            return np.repeat(data[:, :, None], 3, axis=2)
        if data.ndim != 1:
            raise ImageDecodeError(f"image array has shape {data.shape}, expected [H, W, 3] or encoded bytes")
        data = data.tobytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                _check_pixels(image.size)
                # load() forces the full decode, so a truncated JPEG fails here and not later.
                image.load()
                return to_rgb8(image)
    except ImageDecodeError:
        raise
    except TopofrError as exc:
        raise ImageDecodeError(str(exc)) from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"image larger than the limit of {MAX_IMAGE_PIXELS} pixels") from None
    except Exception as exc:  # noqa: BLE001 - PIL's format plugins raise many types on malformed bytes
        raise ImageDecodeError(f"not a decodable image ({type(exc).__name__}: {exc})") from None


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"image of {width} x {height} pixels is larger than the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of the decoded, EXIF-oriented image, from the header only (no pixel decode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                _check_pixels(image.size)
                if exif_orientation(image) != 1:
                    # some plugins (TIFF) turn the picture themselves while loading: ask afterwards
                    image.load()
                width, height = oriented_size(*image.size, exif_orientation(image))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"image larger than the limit of {MAX_IMAGE_PIXELS} pixels") from None
    except Exception as exc:  # noqa: BLE001 - as in decode_image
        raise ImageDecodeError(f"not a decodable image ({type(exc).__name__}: {exc})") from None
    return height, width


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode uint8 RGB [H, W, 3] as JPEG."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg expects uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 RGB to [height, width, 3] (no-op when already that size)."""
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
