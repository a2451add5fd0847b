"""RSP — random structure perturbation of a batch, on the batch's device (docs/method.md §1.1).

Each sample is perturbed with probability ξ by one of four operations chosen uniformly:
Gaussian blur, grayscale, colour jitter, random erasing — with torchvision's semantics:

* GaussianBlur(kernel_size=(5, 9), sigma=(0.1, 5)): torchvision reads kernel_size as (kx, ky), so the
  kernel is 5 pixels wide (x) and 9 tall (y); one σ ~ U(0.1, 5) per sample for both axes; reflect
  padding; separable (a row pass then a column pass, per-sample kernels via a grouped conv).
* Grayscale(3 channels): luma 0.2989 R + 0.587 G + 0.114 B, torchvision's rgb_to_grayscale weights.
* ColorJitter(brightness [0.1, 0.5], contrast [0.3, 0.6], saturation [0.2, 0.5], hue [−0.1, 0.3]):
  one factor of each kind per sample, applied in a random order *per sample* (torchvision draws a
  permutation per call, i.e. per image). Brightness scales, contrast blends with the mean grey
  level, saturation blends with the grey image (all clamped to [0, 1]), hue rotates H in HSV space.
* RandomErasing(p=1): up to 10 attempts per sample of area U(0.02, 0.33)·H·W and log-uniform aspect
  in [0.3, 3.3]; the first attempt that fits (h < H and w < W) is erased with 0 (mid-grey in [−1, 1]);
  none fits → unchanged (torchvision/timm behaviour).

Blur, grayscale and jitter act on (x + 1) / 2 ∈ [0, 1] and are mapped back to [−1, 1]. All randomness
is drawn up front as tensors, so a seeded generator fixes the result and nothing waits on the host.
On CUDA every operation runs over the whole batch and torch.where keeps the selected samples
(sync-free); on the CPU, where there is no device to wait for, each operation runs only on its own
sub-batch. The input is never modified (docs/method.md §2 defect 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from topofr_cli.errors import TopofrError

__all__ = ["RandomStructurePerturbation", "gaussian_blur", "grayscale", "color_jitter", "erase_boxes", "OPS"]

OPS = ("blur", "grayscale", "jitter", "erasing")
BLUR_KERNEL_X, BLUR_KERNEL_Y = 5, 9
BLUR_SIGMA = (0.1, 5.0)
BRIGHTNESS, CONTRAST, SATURATION, HUE = (0.1, 0.5), (0.3, 0.6), (0.2, 0.5), (-0.1, 0.3)
ERASE_AREA, ERASE_ASPECT, ERASE_ATTEMPTS = (0.02, 0.33), (0.3, 3.3), 10
LUMA = (0.2989, 0.587, 0.114)  # torchvision's (the reference's Grayscale), not ITU-R 601-2's 0.299


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels [B, size] sampled at integer offsets around the centre."""
    half = (size - 1) * 0.5
    offsets = torch.linspace(-half, half, size, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of u [B, C, H, W] with its own σ [B] (kernel 5 wide × 9 tall, reflect padding)."""
    b, c, h, w = u.shape
    kx = _gaussian_kernels(sigma.to(u.dtype), BLUR_KERNEL_X).repeat_interleave(c, dim=0)
    ky = _gaussian_kernels(sigma.to(u.dtype), BLUR_KERNEL_Y).repeat_interleave(c, dim=0)
    flat = u.reshape(1, b * c, h, w)
    padded = F.pad(
        flat, (BLUR_KERNEL_X // 2, BLUR_KERNEL_X // 2, BLUR_KERNEL_Y // 2, BLUR_KERNEL_Y // 2), mode="reflect"
    )
    rows = F.conv2d(padded, kx.reshape(b * c, 1, 1, BLUR_KERNEL_X), groups=b * c)
    out = F.conv2d(rows, ky.reshape(b * c, 1, BLUR_KERNEL_Y, 1), groups=b * c)
    return out.reshape(b, c, h, w)


def _luma(u: torch.Tensor) -> torch.Tensor:
    return LUMA[0] * u[:, 0:1] + LUMA[1] * u[:, 1:2] + LUMA[2] * u[:, 2:3]


def grayscale(u: torch.Tensor) -> torch.Tensor:
    """Three identical channels of the luma (torchvision's weights, LUMA)."""
    return _luma(u).expand_as(u).contiguous()


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.reshape(-1, 1, 1, 1)
    return (f * a + (1.0 - f) * b).clamp(0.0, 1.0)


def _adjust_hue(u: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of each image by shift [B] (fraction of a turn)."""
    r, g, b = u[:, 0], u[:, 1], u[:, 2]
    value = u.amax(dim=1)
    chroma = value - u.amin(dim=1)
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    # Hue sector from whichever channel is the maximum (red wins ties, then green).
    hue_r = ((g - b) / safe_chroma) % 6.0
    hue_g = (b - r) / safe_chroma + 2.0
    hue_b = (r - g) / safe_chroma + 4.0
    hue = torch.where(value == r, hue_r, torch.where(value == g, hue_g, hue_b))
    hue = torch.where(grey, torch.zeros_like(hue), hue) / 6.0
    hue = (hue + shift.reshape(-1, 1, 1)) % 1.0
    # HSV → RGB: channel n ∈ {5, 3, 1} is v − v·s·clamp(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6.0) % 6.0
        ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
        channels.append(value - value * saturation * ramp)
    return torch.stack(channels, dim=1).clamp(0.0, 1.0)


def color_jitter(u: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue with per-sample factors [B, 4] in per-sample order [B, 4]."""
    out = u
    for stage in range(4):
        step = order[:, stage].reshape(-1, 1, 1, 1)
        grey_mean = _luma(out).mean(dim=(1, 2, 3), keepdim=True)
        candidates = (
            _blend(out, torch.zeros_like(out), factors[:, 0]),
            _blend(out, grey_mean.expand_as(out), factors[:, 1]),
            _blend(out, _luma(out).expand_as(out), factors[:, 2]),
            _adjust_hue(out, factors[:, 3]),
        )
        out = torch.where(
            step == 0,
            candidates[0],
            torch.where(step == 1, candidates[1], torch.where(step == 2, candidates[2], candidates[3])),
        )
    return out


def erase_boxes(
    shape: tuple[int, ...],
    area: torch.Tensor,
    log_aspect: torch.Tensor,
    top_u: torch.Tensor,
    left_u: torch.Tensor,
) -> torch.Tensor:
    """Boolean [B, H, W] masks of the erased rectangle (all False where no attempt fits).

    area, log_aspect: [B, attempts] draws; top_u, left_u: [B] uniforms placing the chosen box.
    """
    _, _, height, width = shape
    aspect = log_aspect.exp()
    target = area * (height * width)
    box_h = torch.round(torch.sqrt(target * aspect))
    box_w = torch.round(torch.sqrt(target / aspect))
    fits = (box_h < height) & (box_w < width)
    first = fits.long().argmax(dim=1, keepdim=True)  # argmax returns the first maximum: first fitting try
    any_fit = fits.any(dim=1)
    h = box_h.gather(1, first).squeeze(1)
    w = box_w.gather(1, first).squeeze(1)
    top = torch.floor(top_u * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(left_u * (width - w + 1)).clamp(max=width - w)
    rows = torch.arange(height, device=area.device, dtype=area.dtype)
    cols = torch.arange(width, device=area.device, dtype=area.dtype)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :] & any_fit[:, None, None]


class RandomStructurePerturbation:
    """Perturb each sample with probability `prob` by one of the four operations of docs/method.md §1.1.

    Call with x [B, 3, H, W] in [−1, 1] and an optional torch.Generator (on any device; draws are
    moved to x's device). Returns (x_tilde, mask): a new tensor and the bool [B] of perturbed samples.
    `compact=None` runs the CPU per-sub-batch path on the CPU and the masked full-batch path elsewhere.
    """

    def __init__(self, prob: float = 0.2, *, compact: bool | None = None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise TopofrError(f"RSP probability: expected a value in [0, 1], got {prob}")
        self.prob = prob
        self.compact = compact

    def draw(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """All random numbers of one call, as tensors on `device` (fixed draw order: reproducible)."""
        source = generator.device if generator is not None else device

        def uniform(*size: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return torch.rand(*size, generator=generator, device=source) * (high - low) + low

        params = {
            "selected": uniform(batch) < self.prob,
            "op": torch.randint(0, len(OPS), (batch,), generator=generator, device=source),
            "sigma": uniform(batch, low=BLUR_SIGMA[0], high=BLUR_SIGMA[1]),
            "factors": torch.stack(
                [uniform(batch, low=lo, high=hi) for lo, hi in (BRIGHTNESS, CONTRAST, SATURATION, HUE)], dim=1
            ),
            "order": torch.argsort(uniform(batch, 4), dim=1),
            "area": uniform(batch, ERASE_ATTEMPTS, low=ERASE_AREA[0], high=ERASE_AREA[1]),
            "log_aspect": uniform(
                batch, ERASE_ATTEMPTS, low=math.log(ERASE_ASPECT[0]), high=math.log(ERASE_ASPECT[1])
            ),
            "top": uniform(batch),
            "left": uniform(batch),
        }
        return {key: value.to(device) for key, value in params.items()}

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise TopofrError(
                f"RSP: expected a float batch [B, 3, H, W] in [-1, 1], got {tuple(x.shape)} {x.dtype}"
            )
        if x.shape[2] <= BLUR_KERNEL_Y // 2 or x.shape[3] <= BLUR_KERNEL_X // 2:
            raise TopofrError(f"RSP: images of {x.shape[2]}×{x.shape[3]} are too small for the 5×9 blur")
        params = self.draw(x.shape[0], x.device, generator)
        compact = self.compact if self.compact is not None else x.device.type == "cpu"
        apply = _apply_on_subset if compact else _apply_masked
        selected, op = params["selected"], params["op"]
        out = x.detach().to(torch.float32, copy=True)
        colour_ops: list[tuple[int, Callable[..., torch.Tensor], tuple[str, ...]]] = [
            (0, gaussian_blur, ("sigma",)),
            (1, grayscale, ()),
            (2, color_jitter, ("factors", "order")),
        ]
        for index, fn, keys in colour_ops:
            which = selected & (op == index)
            out = apply(out, which, _in_unit_range(fn), [params[k] for k in keys])
        boxes = erase_boxes(
            tuple(x.shape), params["area"], params["log_aspect"], params["top"], params["left"]
        )
        erase = boxes & (selected & (op == 3))[:, None, None]
        out.masked_fill_(erase[:, None, :, :], 0.0)
        return out.to(x.dtype), selected


def _in_unit_range(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """fn acts on images in [0, 1]: map [-1, 1] there and back."""

    def wrapped(img: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return fn((img + 1.0) * 0.5, *params) * 2.0 - 1.0

    return wrapped


def _apply_masked(out, which, fn, params):
    """Run fn on the whole batch and keep its result where `which` (sync-free, for accelerators)."""
    return torch.where(which.reshape(-1, 1, 1, 1), fn(out, *params), out)


def _apply_on_subset(out, which, fn, params):
    """Run fn only on the samples where `which`, in place on our own copy (CPU: indexing costs no sync)."""
    index = torch.nonzero(which).squeeze(1)
    if index.numel() == 0:
        return out
    result = fn(out.index_select(0, index), *[p.index_select(0, index) for p in params])
    return out.index_copy_(0, index, result)
