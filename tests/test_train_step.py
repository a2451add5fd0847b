"""The training step: a non-finite loss skips the update on the device; persistent ones stop the run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from topofr_cli.config import load_recipe
from topofr_cli.engine import trainer
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.metrics import read_metrics
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.step import TrainStep
from topofr_cli.errors import TopofrError
from topofr_cli.models import CombinedMarginHead, PartialFC


class SometimesNaN(PlainObjective):
    def __init__(self, bad_steps: set[int]):
        super().__init__()
        self.bad_steps = bad_steps

    def forward(self, *, x_topology, embeddings, output, step):
        loss, terms = super().forward(x_topology=x_topology, embeddings=embeddings, output=output, step=step)
        return (loss * float("nan") if step in self.bad_steps else loss), terms


def _step(objective, optimizer_name="sgd"):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 4))
    classifier = PartialFC(4, 3, CombinedMarginHead(scale=8.0, m2=0.2))
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, fused=True)}[optimizer_name]
    opts = [make(backbone.parameters()), make(classifier.parameters())]
    step = TrainStep(backbone=backbone, backbone_params=list(backbone.parameters()), classifier=classifier,
                     objective=objective, optimizers=opts, precision="bf16",
                     dist_ctx=DistContext(0, 0, 1, torch.device("cpu"), None), clip_grad_norm=1.0,
                     channels_last=True, horizontal_flip=True, seed=0)
    images = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    return step, backbone, classifier, opts, images, torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_nan_loss_skips_the_update_without_touching_state(optimizer_name):
    step, backbone, classifier, opts, images, labels = _step(SometimesNaN({0}), optimizer_name)
    before = [p.detach().clone() for p in [*backbone.parameters(), *classifier.parameters()]]
    result = step(images, labels, 0)  # the first step is bad
    assert result.bad.item() == 1.0 and result.skipped.item() == 1.0
    after = [p.detach() for p in [*backbone.parameters(), *classifier.parameters()]]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    if optimizer_name == "sgd":  # momentum stays exactly zero (fused SGD would leave garbage here)
        assert all(torch.count_nonzero(s["momentum_buffer"]) == 0 for s in opts[0].state.values())
    result = step(images, labels, 1)
    assert result.bad.item() == 0.0 and torch.isfinite(result.loss)
    moved = [p.detach() for p in [*backbone.parameters(), *classifier.parameters()]]
    assert not all(torch.equal(a, b) for a, b in zip(before, moved, strict=True))
    assert result.grad_norm.item() > 0


def test_flip_and_first_update_are_a_function_of_seed_and_step():
    first = _step(PlainObjective())
    second = _step(PlainObjective())
    a = first[0](first[4], first[5], 7).loss
    b = second[0](second[4], second[5], 7).loss
    assert torch.equal(a, b)


def test_persistent_non_finite_loss_stops_the_run(make_tiny_dataset, tiny_recipe_file, tmp_path, monkeypatch):
    data = make_tiny_dataset(tmp_path / "data", classes=4, per_class=4, pairs=0)
    recipe = load_recipe(tiny_recipe_file(tmp_path, data, tmp_path / "run"), ["train.max_bad_steps=2"])
    monkeypatch.setattr(trainer, "build_objective", lambda recipe, ctx: SometimesNaN(set(range(100))))
    with pytest.raises(TopofrError, match="not finite for 2 consecutive steps"):
        trainer.train(recipe)
    rows = read_metrics(tmp_path / "run/metrics.csv")
    assert [r["bad_steps"] for r in rows] == ["1", "2"]
    assert rows[0]["loss"] == "nan"


def test_fp16_grad_scaler_path_skips_a_nan_step_and_backs_off():
    """The CUDA fp16 path (GradScaler + fused SGD) exercised on the CPU by forcing fp16 autocast."""
    step, backbone, classifier, opts, images, labels = _step(SometimesNaN({0}))
    step.precision, step.autocast_dtype = "fp16", torch.float16
    step.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in [*backbone.parameters(), *classifier.parameters()]]
    result = step(images, labels, 0)
    assert result.skipped.item() == 1.0 and step.scaler.get_scale() == 512.0  # overflow: scale halves
    assert all(torch.equal(a, p) for a, p in zip(before, [*backbone.parameters(), *classifier.parameters()],
                                                  strict=True))
    result = step(images, labels, 1)
    assert result.skipped.item() == 0.0 and torch.isfinite(result.loss)
    assert not torch.equal(before[0], next(backbone.parameters()))
