"""Per-photo variation of synthetic faces: pose, expression, framing, light, colour, degradation.

Drawn separately from the identity so the same person can be photographed many ways; the
renderer (`synthetic_render`) turns an `Identity` plus a `Nuisance` into pixels.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np

NOISE_BANK_SIZE = 48  # fixed noise fields a photo picks from (see synthetic_render._noise_bank)


@dataclass(frozen=True)
class Nuisance:
    """Per-photo variation of K photos; every field is an array with leading dimension K."""

    yaw: np.ndarray  # horizontal shift of the inner features (scaled by each feature's depth)
    pitch: np.ndarray
    eye_open: np.ndarray
    gaze: np.ndarray
    brow_raise: np.ndarray
    smile: np.ndarray
    _: KW_ONLY  # at most six fields by position
    mouth_open: np.ndarray
    clothing: np.ndarray  # [K, 3]
    rotation: np.ndarray  # radians
    scale: np.ndarray
    squash: np.ndarray  # horizontal / vertical scale ratio (pose-like)
    shift: np.ndarray  # [K, 2] pixels
    background: np.ndarray  # [K, 3]
    background_gradient: np.ndarray  # [K, 2] direction × strength
    background_tint: np.ndarray  # [K, 3]
    light_gain: np.ndarray
    light_gradient: np.ndarray  # [K, 2]
    color_cast: np.ndarray  # [K, 3]
    occluder: np.ndarray  # [K] bool
    occluder_shape: np.ndarray  # [K, 5]: is_rectangle, cu, cv, half width, half height
    occluder_color: np.ndarray  # [K, 3]
    blur: np.ndarray  # Gaussian radius in pixels, 0 = none
    noise: np.ndarray  # std in [0, 1] intensity units
    noise_field: np.ndarray  # index into the fixed noise bank
    noise_flip: np.ndarray  # [K] bool: mirror the noise field
    quality: np.ndarray  # JPEG quality


def draw_nuisance(
    rng: np.random.Generator, count: int, difficulty: float = 1.0, max_quality: int = 90
) -> Nuisance:
    """Draw the variation of `count` photos; `difficulty` scales pose, light, colour and degradation.

    Background and clothing colours are not scaled: they cost raw-pixel matching the most and a
    convolutional network the least. At difficulty 1 framing (shift, rotation, scale) stays
    strong, since convolutions tolerate it, while the colour-destroying terms (light gain, colour
    cast, occluders) stay moderate so identity colour relations survive.
    """
    k, d, u = count, difficulty, rng.uniform
    angle = u(0, 2 * np.pi, k)
    light_angle = u(0, 2 * np.pi, k)
    occluder = rng.random(k) < min(0.2 * d, 0.9)
    min_quality = int(np.clip(max_quality - 30 * d, 10, max_quality))
    return Nuisance(
        yaw=u(-0.06, 0.06, k) * d,
        pitch=u(-0.03, 0.03, k) * d,
        eye_open=np.where(rng.random(k) < 0.1, u(0.15, 0.5, k), u(0.7, 1.1, k)),
        gaze=u(-0.025, 0.025, k),
        brow_raise=u(-0.015, 0.035, k),
        smile=u(-0.4, 1.0, k),
        mouth_open=np.where(rng.random(k) < 0.3, u(0.01, 0.06, k), 0.0),
        clothing=u(0.05, 0.95, (k, 3)),
        rotation=np.deg2rad(u(-8, 8, k) * d),
        scale=1.0 + u(-0.08, 0.08, k) * d,
        squash=1.0 + u(-0.05, 0.05, k) * d,
        shift=u(-5, 5, (k, 2)) * d,
        background=u(0.03, 0.97, (k, 3)),
        background_gradient=np.stack([np.cos(angle), np.sin(angle)], 1) * u(0, 0.5, (k, 1)),
        background_tint=u(-0.5, 0.5, (k, 3)),
        light_gain=np.exp(u(-0.3, 0.15, k) * d),
        light_gradient=np.stack([np.cos(light_angle), np.sin(light_angle)], 1) * u(0, 0.4, (k, 1)) * d,
        color_cast=np.exp(u(-0.1, 0.1, (k, 3)) * d),
        occluder=occluder,
        occluder_shape=np.stack(
            [rng.random(k) < 0.5, u(-0.6, 0.6, k), u(-0.5, 0.8, k), u(0.15, 0.55, k), u(0.08, 0.3, k)], 1
        ),
        occluder_color=u(0.0, 1.0, (k, 3)),
        blur=np.where(rng.random(k) < 0.4, u(0.3, 1.0, k) * d, 0.0),
        noise=u(0.0, 0.03, k) * d,
        noise_field=rng.integers(0, NOISE_BANK_SIZE, k),
        noise_flip=rng.random(k) < 0.5,
        quality=rng.integers(min_quality, max_quality + 1, k),
    )
