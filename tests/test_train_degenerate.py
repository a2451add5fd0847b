"""`train` warns about a collapsed model at each verification, with the words `topofr eval` uses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from topofr_cli.data.bins import write_bin
from topofr_cli.data.images import encode_jpeg
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.hooks import VerificationHook
from topofr_cli.evaluation.degeneracy import degenerate_message


class Constant(torch.nn.Module):
    """Every face to almost one direction: the collapse of the first training steps."""

    def __init__(self, spread: float) -> None:
        super().__init__()
        self.spread = spread
        self.anchor = torch.nn.Parameter(torch.ones(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.anchor + self.spread * x.flatten(1)[:, :16]


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def print(self, text: str) -> None:
        self.lines.append(("info", text))

    def note(self, text: str) -> None:
        self.lines.append(("note", text))


def _verify(tmp_path, backbone) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    images = [encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(40)]
    path = write_bin(tmp_path / "val.bin", images, np.arange(20) % 2 == 0)
    ctx = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend=None)
    hook = VerificationHook(bins=[path], every=1, at_epoch_end=False, ctx=ctx)
    recorder = Recorder()
    metrics = SimpleNamespace(log=lambda step, row: None)
    hook.after_step(
        SimpleNamespace(step=5, step_epoch=0, backbone=backbone, metrics=metrics, progress=recorder)
    )
    return recorder.lines


def test_a_collapsed_model_gets_the_eval_warning_in_the_training_log(tmp_path):
    lines = _verify(tmp_path, Constant(spread=1e-3))
    notes = [text for level, text in lines if level == "note"]
    assert len(notes) == 1 and notes[0].startswith("step 5, val: degenerate embeddings (mean cosine")
    cosine = float(notes[0].split("images ")[1].split(")")[0])
    assert cosine > 0.99 and notes[0] == "step 5, " + degenerate_message("val", cosine)


def test_a_spread_model_gets_no_warning(tmp_path):
    lines = _verify(tmp_path, Constant(spread=100.0))
    assert [level for level, _ in lines] == ["info"]
