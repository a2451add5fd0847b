"""The text of a run's log: start banner, one line per logged step, end summary (train.log and screen).

Only strings are made here; `engine.progress.TrainProgress` sends them to the reporter and appends
them to `RUN/train.log`, so the file and a redirected stdout read the same.
"""

from __future__ import annotations

import platform
import resource
import sys
from collections.abc import Mapping
from typing import Any

import torch

from topofr_cli import __version__
from topofr_cli.config import Recipe


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_changes(recipe: Recipe) -> dict[str, Any]:
    """The recipe keys whose value differs from the defaults (`Recipe()`), dotted, in schema order."""
    defaults = _flat(Recipe().to_dict())
    return {
        key: value for key, value in _flat(recipe.to_dict()).items() if defaults.get(key, object()) != value
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()})"


def peak_memory(device: torch.device) -> str:
    """Peak allocated GPU memory on a GPU (the allocator's counter: no sync); peak resident memory on CPU."""
    if device.type == "cuda":
        return f"mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return f"rss {kib / (2**30 if sys.platform == 'darwin' else 2**20):.2f} GiB"


def duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def banner(
    *,
    recipe: Recipe,
    run_dir: Any,
    resumed_step: int | None,
    data_path: Any,
    images: int,
    classes: int,
    world_size: int,
    device: torch.device,
    global_batch: int,
    total_steps: int,
    steps_per_epoch: int,
) -> list[str]:
    """What the run is about to do, in a few lines (the first lines of train.log)."""
    start = "a fresh run" if resumed_step is None else f"resumed from step {resumed_step}"
    changes = recipe_changes(recipe)
    train = recipe.train
    return [
        f"topofr {__version__}: training {run_dir} ({start})",
        f"data {data_path}: {images:,} images, {classes:,} classes",
        f"{world_size} process(es), rank 0 on {device_name(device)}; precision {train.precision}; global batch "
        f"{global_batch} ({recipe.data.batch_size} per process)",
        f"{total_steps} steps ({steps_per_epoch} per epoch, {recipe.schedule.epochs} epochs); a line every "
        f"{train.log_every} steps, a checkpoint every {train.save_every or 'epoch'}",
        "recipe, changed from the defaults:" + ("" if changes else " none"),
        *(f"  {key}: {value}" for key, value in changes.items()),  # one per line: a log reader greps them
    ]


def step_line(
    *,
    step: int,
    total_steps: int,
    epoch: int,
    epochs: int,
    loss: float,
    terms: Mapping[str, float],
    lr: float,
    images_per_second: float,
    eta_seconds: float,
    memory: str,
) -> str:
    """One logged step: `step 40/200 epoch 1/4 loss 9.8765 (ce 9.70, ptsa 0.1765) lr 0.1 812.3 img/s eta 0:01:02 mem …`."""
    parts = ", ".join(f"{name} {value:.4g}" for name, value in terms.items())
    return (
        f"step {step}/{total_steps} epoch {epoch + 1}/{epochs} loss {loss:.4f}"
        + (f" ({parts})" if parts else "")
        + f" lr {lr:.4g} {images_per_second:.1f} img/s eta {duration(eta_seconds)} {memory}"
    )


def summary(
    *,
    steps: int,
    seconds: float,
    images_per_second: float,
    bad_steps: int,
    checkpoint: Any,
    verification: str,
    memory: str,
) -> str:
    """The last line of a run."""
    return (
        f"finished: {steps} steps in {duration(seconds)} ({images_per_second:.1f} img/s), {bad_steps} non-finite "
        f"steps skipped, peak {memory}"
        + (f"; {verification}" if verification else "")
        + (f"; last checkpoint {checkpoint}" if checkpoint else "")
    )
