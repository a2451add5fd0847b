"""Every PIL pixel mode decodes to the right 8-bit RGB or is refused (issue 19, class 4).

Expected pixels are computed by hand from each mode's definition (16-bit: round(v * 255 / 65535);
CMYK: (255 - C)(255 - K) / 255; EXIF orientations from the EXIF 2.3 table), never by PIL's converter.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.data.images import ImageDecodeError, decode_image, image_size


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def grey(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.uint8)
    return np.repeat(values[:, :, None], 3, axis=2)


SIXTEEN = np.array([[0, 128, 129, 257], [32767, 32768, 65278, 65535]], dtype=np.uint16)
# round(v * 255 / 65535) by hand: 128 -> 0.498, 129 -> 0.502, 257 -> 1, 32767 -> 127.498, 32768 -> 127.502
SIXTEEN_AS_8 = [[0, 0, 1, 1], [127, 128, 254, 255]]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt):
    rgb = decode_image(encoded(Image.fromarray(SIXTEEN), fmt))
    np.testing.assert_array_equal(rgb, grey(SIXTEEN_AS_8))


def test_sixteen_bit_big_endian_tiff():
    image = Image.frombytes("I;16B", (4, 2), SIXTEEN.astype(">u2").tobytes())
    np.testing.assert_array_equal(decode_image(encoded(image, "TIFF")), grey(SIXTEEN_AS_8))


def test_thirty_two_bit_int_within_sixteen_bits_and_beyond():
    inside = Image.fromarray(SIXTEEN.astype(np.int32), mode="I")
    np.testing.assert_array_equal(decode_image(encoded(inside, "TIFF")), grey(SIXTEEN_AS_8))
    beyond = Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I")
    with pytest.raises(ImageDecodeError, match=r"I pixel values span 0\.\.70000, outside 0\.\.65535"):
        decode_image(encoded(beyond, "TIFF"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[0.0, 0.25, 0.5, 1.0]], [[0, 64, 128, 255]]),  # 0..1: x 255, rounded (63.75 -> 64, 127.5 -> 128)
        ([[0.0, 2.4, 100.6, 255.0]], [[0, 2, 101, 255]]),  # 0..255: kept, rounded
    ],
)
def test_float_tiff_is_scaled_by_its_range(values, expected):
    image = Image.fromarray(np.array(values, dtype=np.float32), mode="F")
    np.testing.assert_array_equal(decode_image(encoded(image, "TIFF")), grey(expected))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (np.nan, "NaN or infinity"),
        (np.inf, "NaN or infinity"),
        (-1.0, "neither 0..1 nor 0..255"),
        (300.0, "300"),
    ],
)
def test_float_tiff_with_no_known_scale_is_refused(value, fragment):
    image = Image.fromarray(np.array([[0.0, value]], dtype=np.float32), mode="F")
    with pytest.raises(ImageDecodeError, match=fragment):
        decode_image(encoded(image, "TIFF"))


def test_palette_with_transparency_keeps_the_palette_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encoded(image, "PNG", transparency=0)  # index 0 fully transparent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's palette-transparency warning must not escape
        rgb = decode_image(data)
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [200, 100, 50]]])


def test_cmyk_by_the_subtractive_formula():
    image = Image.new("CMYK", (1, 1), (51, 102, 0, 51))
    # R = (255-51)(255-51)/255 = 163.2, G = (255-102)(204)/255 = 122.4, B = 255*204/255 = 204
    rgb = decode_image(encoded(image, "TIFF"))
    np.testing.assert_allclose(rgb[0, 0], [163, 122, 204], atol=1)


def test_grey_with_alpha_and_rgba_drop_alpha():
    la = Image.fromarray(np.array([[[90, 0], [200, 255]]], dtype=np.uint8), mode="LA")
    np.testing.assert_array_equal(decode_image(encoded(la, "PNG")), grey([[90, 200]]))
    rgba = Image.fromarray(np.array([[[1, 2, 3, 0], [4, 5, 6, 128]]], dtype=np.uint8), mode="RGBA")
    np.testing.assert_array_equal(decode_image(encoded(rgba, "PNG")), [[[1, 2, 3], [4, 5, 6]]])


def test_one_bit_is_black_and_white():
    image = Image.new("1", (3, 1))
    image.putpixel((0, 0), 1)
    image.putpixel((2, 0), 1)
    np.testing.assert_array_equal(decode_image(encoded(image, "PNG")), grey([[255, 0, 255]]))


def test_ycbcr_by_the_jfif_formula():
    image = Image.new("YCbCr", (1, 1), (100, 128, 200))
    # JFIF: R = Y + 1.402 (Cr - 128) = 200.9; G = Y - 0.714136 (Cr - 128) = 48.6; B = Y = 100
    np.testing.assert_allclose(decode_image(encoded(image, "TIFF"))[0, 0], [201, 49, 100], atol=1)


def test_lab_mid_grey():
    image = Image.new("LAB", (1, 1), (128, 128, 128))  # L* = 50.2, a* = b* = 0
    # L* = 50 is CIE Y = 0.184, sRGB-encoded 0.467 -> 119
    np.testing.assert_allclose(decode_image(encoded(image, "TIFF"))[0, 0], [119, 119, 119], atol=1)


STORED = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8) * 40
UPRIGHT = {  # the stored 2 x 3 picture as the viewer must see it, per EXIF orientation
    1: [[1, 2, 3], [4, 5, 6]],
    2: [[3, 2, 1], [6, 5, 4]],
    3: [[6, 5, 4], [3, 2, 1]],
    4: [[4, 5, 6], [1, 2, 3]],
    5: [[1, 4], [2, 5], [3, 6]],
    6: [[4, 1], [5, 2], [6, 3]],
    7: [[6, 3], [5, 2], [4, 1]],
    8: [[3, 6], [2, 5], [1, 4]],
}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(orientation, fmt):
    image = Image.fromarray(np.kron(STORED, np.ones((8, 8), np.uint8)))  # 8 x 8 blocks survive JPEG
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(image, fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    rgb = decode_image(data)
    expected = np.kron(np.array(UPRIGHT[orientation], np.uint8) * 40, np.ones((8, 8), np.uint8))
    np.testing.assert_allclose(rgb[:, :, 0], expected, atol=3 if fmt == "JPEG" else 0)
    assert image_size(data) == rgb.shape[:2]


def test_decompression_bomb_is_one_line_without_pil_warning(tmp_path):
    folder = tmp_path / "photos" / "alice"
    folder.mkdir(parents=True)
    # 10,000 x 10,000: above PIL's warning threshold (89 Mpixels), below its error, above ours
    encoded_bomb = encoded(Image.new("1", (10_000, 10_000)), "PNG")
    (folder / "bomb.png").write_bytes(encoded_bomb)
    (folder / "ok.png").write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG"))
    result = CliRunner().invoke(app, ["prepare", "folder", str(tmp_path / "photos"), str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "bomb.png" in errors[0] and "larger than the limit" in errors[0], (
        result.output
    )
    assert "DecompressionBombWarning" not in result.output and "warn" not in result.output.lower()


def test_pil_log_records_do_not_reach_stderr(tmp_path):
    """PIL logs 'More samples per pixel than can be decoded' before raising; with logging not set up
    Python printed it to stderr ahead of the one error line."""
    import subprocess
    import sys

    path = tmp_path / "spp.tif"
    path.write_bytes(encoded(Image.new("L", (4, 4)), "TIFF", tiffinfo={277: 1000}))
    code = (
        "import sys\nfrom topofr_cli.data.images import ImageDecodeError, decode_image\n"
        "try:\n    decode_image(open(sys.argv[1], 'rb').read())\n"
        "except ImageDecodeError as exc:\n    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout == "refused\n" and done.stderr == "", (done.stdout, done.stderr)
