"""Procedural face-like images: who a face is (identity) and how one photo of it turns out (nuisance).

An `Identity` holds the persistent parameters (face shape, skin tone, eye/brow/nose/mouth geometry,
hair, ears, beard, skin marks and a low-frequency skin texture). `render_pixels` draws K photos
of one identity as a batch, given their `Nuisance` (see `synthetic_nuisance`): the face is painted in a canonical frame (the canvas spans [-1, 1]
with v pointing down, eyes near the ArcFace template's height), per-photo expression and a yaw-like
shift of the inner features are applied there, then each photo gets its own small affine
misalignment, background, illumination gradient, colour cast, occluder, blur, noise and JPEG
quality. Nuisance is strong on purpose, so raw-pixel distance says little about identity, while
geometry, texture and colour relations between face parts survive it.

Everything is a pure function of the numpy Generator passed in, so a seed fixes the bytes.
"""

from __future__ import annotations

import functools
from dataclasses import KW_ONLY, dataclass

import numpy as np
from PIL import Image, ImageFilter

from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.synthetic_nuisance import NOISE_BANK_SIZE, Nuisance

IMAGE_SIZE = 112
PIXEL = 2.0 / IMAGE_SIZE  # canonical units per pixel
# pixel-centre coordinates; kept 1-D so masks are built by broadcasting [H, 1] against [1, W]
_AXIS = ((np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) * PIXEL - 1.0).astype(np.float32)

HAIR_PALETTE = np.array(
    [
        [0.06, 0.05, 0.05],
        [0.20, 0.12, 0.07],
        [0.38, 0.24, 0.13],
        [0.75, 0.60, 0.35],
        [0.55, 0.22, 0.10],
        [0.70, 0.70, 0.68],
        [0.30, 0.28, 0.27],
    ],
    dtype=np.float32,
)
IRIS_PALETTE = np.array(
    [
        [0.25, 0.15, 0.08],
        [0.10, 0.07, 0.05],
        [0.25, 0.45, 0.70],
        [0.30, 0.50, 0.30],
        [0.45, 0.45, 0.48],
        [0.50, 0.38, 0.18],
    ],
    dtype=np.float32,
)
SKIN_LIGHT = np.array([0.97, 0.82, 0.70], dtype=np.float32)
SKIN_DARK = np.array([0.33, 0.21, 0.14], dtype=np.float32)
HAIR_STYLES = ("short", "long", "bald", "fringe", "curly")


@dataclass(frozen=True)
class Identity:
    """Persistent appearance of one synthetic person (canonical units, RGB in [0, 1])."""

    face_cy: float
    face_rx: float
    face_ry: float
    jaw_taper: float
    skin: np.ndarray
    skin_texture: np.ndarray  # [3, 4]: per-wave (frequency u, frequency v, phase, amplitude)
    _: KW_ONLY  # at most six fields by position
    ear_size: float
    hair_style: int
    hair_color: np.ndarray
    hairline: float
    hair_volume: float
    hair_wave: np.ndarray  # [3]: frequency, angle, phase of the strand pattern
    eye_y: float
    eye_dx: float
    eye_rx: float
    eye_ry: float
    iris_r: float
    iris_color: np.ndarray
    brow_gap: float
    brow_len: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float
    brow_color: np.ndarray
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_h: float
    lip_color: np.ndarray
    beard: float  # 0 = none, else density
    marks: np.ndarray  # [M, 4]: u, v, radius, darkness

    def vector(self) -> np.ndarray:
        """All parameters as one float vector (to compare identities)."""
        parts = [
            np.ravel(np.asarray(getattr(self, name), dtype=np.float64)) for name in self.__dataclass_fields__
        ]
        return np.concatenate(parts)


def draw_identity(rng: np.random.Generator) -> Identity:
    """Draw the persistent parameters of one identity."""
    u = rng.uniform
    face_cy, face_rx, face_ry = u(0.04, 0.16), u(0.50, 0.66), u(0.72, 0.86)
    eye_y = u(-0.15, -0.02)
    brow_gap = u(0.08, 0.15)
    nose_y = eye_y + u(0.26, 0.40)
    mouth_y = min(nose_y + u(0.13, 0.24), face_cy + face_ry - 0.2)
    # multiplicative jitter keeps a palette colour's hue (additive jitter turned dark hair green)
    hair_color = np.clip(HAIR_PALETTE[rng.integers(len(HAIR_PALETTE))] * np.exp(rng.normal(0, 0.08, 3)), 0, 1)
    skin = np.clip(SKIN_LIGHT + u(0, 1) * (SKIN_DARK - SKIN_LIGHT) + rng.normal(0, 0.035, 3), 0, 1)
    lip_tint = np.array([u(0.75, 0.95), u(0.45, 0.62), u(0.45, 0.62)])
    num_marks = min(int(rng.poisson(1.6)), 5)
    marks = (
        np.stack(
            [
                u(-0.7, 0.7, num_marks) * face_rx,
                u(eye_y - 0.12, mouth_y + 0.08, num_marks),
                u(0.012, 0.032, num_marks),
                u(0.25, 0.7, num_marks),
            ],
            axis=1,
        )
        if num_marks
        else np.zeros((0, 4))
    )
    texture = np.stack([u(2, 9, 3), u(2, 9, 3), u(0, 2 * np.pi, 3), u(0.01, 0.05, 3)], axis=1)
    return Identity(
        face_cy=face_cy,
        face_rx=face_rx,
        face_ry=face_ry,
        jaw_taper=u(0.0, 0.4),
        skin=skin.astype(np.float32),
        skin_texture=texture.astype(np.float32),
        ear_size=u(0.07, 0.13),
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        hair_color=hair_color.astype(np.float32),
        hairline=eye_y - brow_gap - u(0.17, 0.36),
        hair_volume=u(0.05, 0.2),
        hair_wave=np.array([u(20, 70), u(-0.6, 0.6), u(0, 2 * np.pi)], dtype=np.float32),
        eye_y=eye_y,
        eye_dx=u(0.25, 0.36),
        eye_rx=u(0.085, 0.135),
        eye_ry=u(0.035, 0.06),
        iris_r=u(0.028, 0.042),
        iris_color=np.clip(
            IRIS_PALETTE[rng.integers(len(IRIS_PALETTE))] + rng.normal(0, 0.03, 3), 0, 1
        ).astype(np.float32),
        brow_gap=brow_gap,
        brow_len=u(0.10, 0.17),
        brow_thick=u(0.015, 0.045),
        brow_arch=u(-0.5, 3.0),
        brow_tilt=u(-0.3, 0.3),
        brow_color=(hair_color * u(0.5, 1.0)).astype(np.float32),
        nose_y=nose_y,
        nose_w=u(0.07, 0.14),
        mouth_y=mouth_y,
        mouth_w=u(0.13, 0.25),
        lip_h=u(0.022, 0.048),
        lip_color=np.clip(skin * lip_tint * u(0.8, 1.05), 0, 1).astype(np.float32),
        beard=u(0.4, 1.0) if rng.random() < 0.3 else 0.0,
        marks=marks.astype(np.float32),
    )


def _ramp(signed_distance):
    """Antialiased inside-ness from a signed distance in canonical units (positive = inside)."""
    return np.clip(signed_distance * (1.0 / PIXEL) + 0.5, 0.0, 1.0)


def _ellipse(u, v, cx, cy, rx, ry):
    """Antialiased ellipse alpha; near the edge 1 − q ≈ 2·(distance / radius)."""
    q = np.square((u - cx) / rx) + np.square((v - cy) / ry)
    return _ramp((1.0 - q) * (0.5 * np.minimum(rx, ry)))


def _paint(canvas, window, alpha, color):
    """Paint `color` over canvas[:, rows, cols] with `alpha` [K, h, w] ("over", opaque region)."""
    region = canvas[(slice(None), *window)]
    region += alpha[..., None] * (color - region)


def _window(u0, u1, v0, v1):
    """Row/column slices of the canonical canvas covering [u0, u1] × [v0, v1]."""

    def span(lo, hi):
        first = int(np.clip(np.floor((lo + 1.0) / PIXEL), 0, IMAGE_SIZE))
        last = int(np.clip(np.ceil((hi + 1.0) / PIXEL) + 1, 0, IMAGE_SIZE))
        return slice(first, max(first, last))

    return span(v0, v1), span(u0, u1)


def _axes(window):
    rows, cols = window
    v = _AXIS[rows][None, :, None]
    u = _AXIS[cols][None, None, :]
    return u, v


def _identity_layer(ident: Identity) -> tuple[np.ndarray, np.ndarray]:
    """Face, neck, ears, beard, marks and hair painted once: premultiplied RGB [H, W, 3], alpha [H, W]."""
    u = _AXIS[None, :]
    v = _AXIS[:, None]
    rgb = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    alpha = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)

    def over(a, color):
        nonlocal rgb, alpha
        rgb = rgb * (1.0 - a[..., None]) + a[..., None] * color
        alpha = alpha + a * (1.0 - alpha)

    neck_w = ident.face_rx * 0.55
    neck = _ramp(neck_w - np.abs(u)) * _ramp(v - ident.face_cy)
    over(neck, ident.skin * 0.78)
    for side in (-1.0, 1.0):
        over(
            _ellipse(
                u, v, side * ident.face_rx * 0.98, ident.eye_y + 0.12, ident.ear_size * 0.6, ident.ear_size
            ),
            ident.skin * 0.9,
        )
    dv = (v - ident.face_cy) / ident.face_ry
    rx = ident.face_rx * (1.0 - ident.jaw_taper * np.square(np.clip(dv, 0.0, 1.0)))
    q = np.square(u / rx) + np.square(dv)
    face = _ramp((1.0 - q) * 0.5 * ident.face_rx)
    wave = np.zeros_like(q)
    for fu, fv, phase, amp in ident.skin_texture:
        wave = wave + amp * np.sin(fu * u + fv * v + phase)
    shade = (1.06 - 0.22 * np.clip(q, 0.0, 1.0) + wave)[..., None]
    skin = ident.skin * shade
    if ident.beard > 0:
        # fades in over ~3 px below the nose instead of a hard edge
        beard = face * np.clip((v - ident.nose_y - 0.04) / 0.06, 0.0, 1.0) * ident.beard * 0.85
        skin = skin * (1.0 - beard[..., None]) + beard[..., None] * ident.hair_color
    for mu, mv, radius, dark in ident.marks:
        mark = _ellipse(u, v, mu, mv, radius, radius) * dark
        skin = skin * (1.0 - mark[..., None]) + mark[..., None] * (ident.skin * 0.35)
    over(face, skin)

    style = HAIR_STYLES[ident.hair_style]
    if style != "bald":
        volume = ident.hair_volume * (2.2 if style == "curly" else 1.0)
        extra_down = 0.45 if style == "long" else 0.0
        outer = _ellipse(
            u,
            v,
            0.0,
            ident.face_cy - 0.06 + extra_down / 2,
            ident.face_rx + volume,
            ident.face_ry + volume * 0.8 + extra_down / 2,
        )
        if style == "fringe":
            line = ident.eye_y - ident.brow_gap - 0.05 + 0.02 * np.sin(40 * u)
        else:
            line = ident.hairline + 0.35 * np.square(u)  # temples recede
        on_face = _ramp(line - v)
        limit = 1.2 if style == "long" else ident.eye_y + 0.1
        off_face = _ramp(limit - v)
        hair = outer * (face * on_face + (1.0 - face) * off_face)
        freq, angle, phase = ident.hair_wave
        if style == "curly":
            strands = np.sin(freq * u + phase) * np.sin(freq * v)
        else:
            strands = np.sin(freq * (u * np.cos(angle) + v * np.sin(angle)) + phase + 3.0 * np.sin(4.0 * u))
        over(hair, ident.hair_color * (1.0 + 0.18 * strands)[..., None])
    return rgb, alpha


def _per_image(x):
    """[K] → [K, 1, 1] for broadcasting against [K, h, w] masks."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _paint_features(canvas: np.ndarray, ident: Identity, nz: Nuisance) -> None:
    """Eyes, brows, nose and mouth with this photo's expression and yaw, on small windows."""
    yaw, pitch = _per_image(nz.yaw), _per_image(nz.pitch)
    reach = float(np.max(np.abs(nz.yaw))) + 0.02
    lift = float(np.max(np.abs(nz.pitch))) + 0.05
    eye_white = np.array([0.93, 0.91, 0.88], np.float32)
    dark = ident.skin * 0.22
    for side in (-1.0, 1.0):
        centre = side * ident.eye_dx
        win = _window(
            centre - reach - 1.3 * ident.eye_rx,
            centre + reach + 1.3 * ident.eye_rx,
            ident.eye_y - lift - 1.6 * ident.eye_ry,
            ident.eye_y + lift + 1.6 * ident.eye_ry,
        )
        u, v = _axes(win)
        cx, cy = centre + 0.6 * yaw, ident.eye_y + 0.5 * pitch
        ry = ident.eye_ry * _per_image(nz.eye_open)
        _paint(canvas, win, _ellipse(u, v, cx, cy, ident.eye_rx * 1.12, ry * 1.25 + 0.008), dark)
        white = _ellipse(u, v, cx, cy, ident.eye_rx, ry)
        _paint(canvas, win, white, eye_white)
        gx = cx + _per_image(nz.gaze)
        _paint(canvas, win, _ellipse(u, v, gx, cy, ident.iris_r, ident.iris_r) * white, ident.iris_color)
        _paint(
            canvas,
            win,
            _ellipse(u, v, gx, cy, ident.iris_r * 0.45, ident.iris_r * 0.45) * white,
            np.float32(0.03),
        )

        brow_x = side * (ident.eye_dx + 0.01)
        brow_y = ident.eye_y - ident.brow_gap
        win = _window(
            brow_x - reach - ident.brow_len - 0.02,
            brow_x + reach + ident.brow_len + 0.02,
            brow_y - lift - 0.12,
            brow_y + lift + 0.12,
        )
        u, v = _axes(win)
        x = u - (brow_x + 0.6 * yaw)
        centre_line = (
            brow_y
            + 0.5 * pitch
            - _per_image(nz.brow_raise)
            + ident.brow_arch * np.square(x)
            - side * ident.brow_tilt * x
        )
        brow = _ramp(0.5 * ident.brow_thick - np.abs(v - centre_line)) * _ramp(ident.brow_len - np.abs(x))
        _paint(canvas, win, brow, ident.brow_color)

    win = _window(
        -reach - 2 * ident.nose_w, reach + 2 * ident.nose_w, ident.eye_y, ident.nose_y + lift + 0.03
    )
    u, v = _axes(win)
    ncx, base = yaw, ident.nose_y + 0.6 * pitch
    length = 0.5 * (ident.nose_y - ident.eye_y)
    ridge_side = np.where(yaw >= 0, 1.0, -1.0).astype(np.float32)
    ridge = _ellipse(u, v, ncx + ridge_side * ident.nose_w * 0.45, base - length, ident.nose_w * 0.2, length)
    _paint(canvas, win, ridge * 0.35, ident.skin * 0.6)
    _paint(
        canvas,
        win,
        _ellipse(u, v, ncx, base - 0.03, ident.nose_w * 0.5, 0.045) * 0.3,
        np.minimum(ident.skin * 1.15, 1.0),
    )
    for side in (-1.0, 1.0):
        nostril = _ellipse(u, v, ncx + side * ident.nose_w * 0.45, base, ident.nose_w * 0.22, 0.017)
        _paint(canvas, win, nostril, ident.skin * 0.3)

    win = _window(
        -reach - 1.1 * ident.mouth_w,
        reach + 1.1 * ident.mouth_w,
        ident.mouth_y - lift - 0.12,
        ident.mouth_y + lift + 0.12,
    )
    u, v = _axes(win)
    mcx, mcy = 0.7 * yaw, ident.mouth_y + 0.6 * pitch
    bent = v + _per_image(nz.smile) * 0.05 * np.square((u - mcx) / ident.mouth_w)  # corners up
    opening = 0.5 * _per_image(nz.mouth_open)
    _paint(canvas, win, _ellipse(u, bent, mcx, mcy, ident.mouth_w, ident.lip_h + opening), ident.lip_color)
    inner = _ellipse(u, bent, mcx, mcy, ident.mouth_w * 0.88, np.maximum(opening, 0.007))
    _paint(canvas, win, inner, np.array([0.2, 0.05, 0.06], np.float32))


def _paint_clothing(canvas: np.ndarray, alpha: np.ndarray, nz: Nuisance) -> None:
    win = _window(-1, 1, 0.6, 1)
    u, v = _axes(win)
    shoulders = _ellipse(u, v, 0.0, 1.5, 1.0, 0.62) * (1.0 - _ellipse(u, v, 0.0, 0.8, 0.22, 0.2))
    _paint(canvas, win, shoulders, nz.clothing[:, None, None, :].astype(np.float32))
    region = alpha[(slice(None), *win)]
    region += shoulders * (1.0 - region)


def _affine_coefficients(nz: Nuisance, index: int) -> tuple[float, ...]:
    """PIL AFFINE data mapping output pixels to canonical pixels (inverse of rotate·scale·shift)."""
    c, s = np.cos(nz.rotation[index]), np.sin(nz.rotation[index])
    sx = nz.scale[index] * nz.squash[index]
    sy = nz.scale[index]
    forward = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    inverse = np.linalg.inv(forward)
    centre = IMAGE_SIZE / 2
    offset = centre - inverse @ (np.array([centre, centre]) + nz.shift[index])
    return (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])


def _warp(canvas: np.ndarray, alpha: np.ndarray, nz: Nuisance) -> np.ndarray:
    """Per-photo misalignment of the face layer: uint8 RGBA [K, H, W, 4] with straight colours.

    PIL resamples RGBA with premultiplied alpha internally, so it gets straight colours
    (the premultiplied canvas divided by alpha) and edges do not darken.
    """
    rgba = np.empty(canvas.shape[:3] + (4,), np.uint8)
    straight = canvas / np.maximum(alpha, 1e-3)[..., None]
    np.clip(straight * 255.0 + 0.5, 0, 255, out=straight)
    rgba[..., :3] = straight
    rgba[..., 3] = np.clip(alpha * 255.0 + 0.5, 0, 255)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    for i in range(len(rgba)):
        warped = Image.fromarray(rgba[i], "RGBA").transform(
            size, Image.Transform.AFFINE, _affine_coefficients(nz, i), resample=Image.Resampling.BILINEAR
        )
        rgba[i] = np.asarray(warped)
    return rgba


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed unit-normal noise fields; photos pick one (and a flip) instead of drawing ~40k normals each."""
    bank_rng = np.random.default_rng(20261128)
    return bank_rng.standard_normal((NOISE_BANK_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)


def render_pixels(ident: Identity, nz: Nuisance) -> np.ndarray:
    """K photos of `ident` as uint8 RGB [K, H, W, 3] (before blur and JPEG)."""
    k = len(nz.yaw)
    layer_rgb, layer_alpha = _identity_layer(ident)
    canvas = np.repeat(layer_rgb[None], k, axis=0)
    alpha = np.repeat(layer_alpha[None], k, axis=0)
    _paint_features(canvas, ident, nz)
    _paint_clothing(canvas, alpha, nz)
    face = _warp(canvas, alpha, nz)

    u, v = _AXIS[None, None, :], _AXIS[None, :, None]
    f32 = np.float32
    grad = _per_image(nz.background_gradient[:, 0]) * u + _per_image(nz.background_gradient[:, 1]) * v
    image = nz.background[:, None, None, :].astype(f32) + grad[..., None] * nz.background_tint[
        :, None, None, :
    ].astype(f32)
    face_alpha = face[..., 3:] * f32(1 / 255)
    image += (face[..., :3] * f32(1 / 255) - image) * face_alpha
    light = _per_image(nz.light_gain) * (
        1.0 + _per_image(nz.light_gradient[:, 0]) * u + _per_image(nz.light_gradient[:, 1]) * v
    )
    image *= light[..., None]
    image *= nz.color_cast[:, None, None, :].astype(f32)

    occluded = np.flatnonzero(nz.occluder)
    if len(occluded):
        is_rect, cu, cv, hw, hh = (_per_image(col) for col in nz.occluder_shape[occluded].T)
        rect = _ramp(hw - np.abs(u - cu)) * _ramp(hh - np.abs(v - cv))
        blob = _ellipse(u, v, cu, cv, hw, hh)
        occ = np.where(is_rect > 0.5, rect, blob)[..., None]
        image[occluded] = image[occluded] * (1.0 - occ) + occ * nz.occluder_color[
            occluded, None, None, :
        ].astype(f32)

    noise = _noise_bank()[nz.noise_field]
    noise[nz.noise_flip] = noise[nz.noise_flip, :, ::-1]
    noise *= _per_image(nz.noise)[..., None]
    image += noise
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def encode_photos(pixels: np.ndarray, nz: Nuisance) -> list[bytes]:
    """Blur (where drawn) and JPEG-encode each photo at its own quality."""
    encoded = []
    for i, rgb in enumerate(pixels):
        if nz.blur[i] > 0:
            rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(float(nz.blur[i]))))
        encoded.append(encode_jpeg(rgb, quality=int(nz.quality[i])))
    return encoded
