"""The one way to turn a device name (auto, cpu, cuda, cuda:N) into a `torch.device`.

Every command's `--device` and the recipe's `train.device` go through here, so they accept the
same names and fail with the same line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from topofr_cli.errors import TopofrError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(text: str) -> bool:
    """Whether `text` is one of `DEVICE_NAMES` (spelling only; says nothing about this machine)."""
    return _PATTERN.fullmatch(text) is not None


def resolve_device(text: str, *, option: str = "--device", local_rank: int = 0) -> torch.device:
    """`auto`: a CUDA device when there is one, else the CPU. `cuda` without an index: the process's
    own GPU (`local_rank` modulo the GPUs on this machine; 0 outside torchrun). `option` names the
    setting in error messages."""
    import torch  # here, so that the recipe loader can check names without loading torch

    if not is_device_name(text):
        raise TopofrError(f"{option} {text}: expected {DEVICE_NAMES}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TopofrError(f"{option} {text}: no CUDA device is available")
    count = torch.cuda.device_count()
    if ":" not in text:
        return torch.device("cuda", local_rank % count)
    index = int(text.split(":")[1])
    if index >= count:
        raise TopofrError(
            f"{option} {text}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", index)
