"""The training step: a non-finite loss skips the update on the device; persistent ones stop the run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from topofr_cli.artifacts.run_dir import read_metrics
from topofr_cli.config import load_recipe
from topofr_cli.engine import build as engine_build
from topofr_cli.engine import trainer
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.schedule import PolySchedule
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
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True),
        "adamw": lambda p: torch.optim.AdamW(p, lr=0.1, fused=True),
    }[optimizer_name]
    opts = [make(backbone.parameters()), make(classifier.parameters())]
    step = TrainStep(
        backbone=backbone,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=objective,
        optimizers=opts,
        precision="bf16",
        dist_ctx=DistContext(0, 0, 1, torch.device("cpu"), None),
        clip_grad_norm=1.0,
        channels_last=True,
        horizontal_flip=True,
        seed=0,
    )
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
    monkeypatch.setattr(engine_build, "build_objective", lambda recipe, ctx: SometimesNaN(set(range(100))))
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
    assert all(
        torch.equal(a, p)
        for a, p in zip(before, [*backbone.parameters(), *classifier.parameters()], strict=True)
    )
    result = step(images, labels, 1)
    assert result.skipped.item() == 0.0 and torch.isfinite(result.loss)
    assert not torch.equal(before[0], next(backbone.parameters()))


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_an_update_that_overflows_is_undone_on_the_device_and_counted_as_bad(optimizer_name):
    """A finite loss and finite gradients, but an lr that sends the weights to ±inf: the step is undone."""
    step, backbone, classifier, opts, images, labels = _step(PlainObjective(), optimizer_name)
    step.clip_grad_norm = None
    for optimizer in opts:
        for group in optimizer.param_groups:
            group["lr"] = 1e38  # 1e38 · |g| overflows float32 once |g| > 3.4
    tensors = [*backbone.parameters(), *classifier.parameters()]
    before = [p.detach().clone() for p in tensors]
    states = [{k: v.clone() for k, v in opts[0].state[p].items()} for p in backbone.parameters()]
    result = step(images, labels, 0)
    assert torch.isfinite(result.loss) and torch.isfinite(result.grad_norm)
    assert result.bad.item() == 1.0 and result.skipped.item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, tensors, strict=True))
    for saved, param in zip(states, backbone.parameters(), strict=True):  # momentum / Adam moments untouched
        assert all(torch.equal(value, opts[0].state[param][key]) for key, value in saved.items())
    for optimizer in opts:
        for group in optimizer.param_groups:
            group["lr"] = 0.1
    assert step(images, labels, 1).bad.item() == 0.0  # a sane lr trains on from the same weights
    assert not torch.equal(before[0], next(backbone.parameters()))


def test_a_non_finite_loss_step_leaves_batchnorm_statistics_as_they_were():
    step, backbone, classifier, opts, images, labels = _step(SometimesNaN({0}))
    norm = nn.BatchNorm1d(4)
    step.backbone = nn.Sequential(backbone, norm)
    step.update_guard.modules = [step.backbone, classifier]
    step(images, labels, 0)
    assert torch.equal(norm.running_mean, torch.zeros(4)) and torch.equal(norm.running_var, torch.ones(4))
    step(images, labels, 1)
    assert not torch.equal(norm.running_mean, torch.zeros(4))


def test_lr_1e30_keeps_every_checkpoint_finite_and_counts_the_bad_steps(
    make_tiny_dataset, tiny_recipe_file, tmp_path, monkeypatch
):
    """lr 1e30 moves the weights to ~1e28 (finite); the next forward pass overflows. Those steps are
    skipped, BatchNorm's statistics included, so every checkpoint still holds finite weights."""
    from topofr_cli.artifacts.checkpoint import Checkpoint, list_checkpoints

    data = make_tiny_dataset(tmp_path / "data", classes=4, per_class=4, pairs=0)
    recipe = load_recipe(
        tiny_recipe_file(tmp_path, data, tmp_path / "run"),
        ["schedule.warmup_epochs=0", "train.save_every=1", "train.max_bad_steps=10"],
    )
    # recipes keep optim.lr within a sane range (the stored recipe is checked on read): the schedule gets it
    monkeypatch.setattr(engine_build, "PolySchedule", lambda lr, *rest: PolySchedule(1e30, *rest))
    trainer.train(recipe, progress=False)
    rows = read_metrics(tmp_path / "run/metrics.csv")
    assert [r["bad_steps"] for r in rows] == ["0", "1", "2", "3"]
    for _step, path in list_checkpoints(tmp_path / "run"):
        checkpoint = Checkpoint.read(path)
        assert all(torch.isfinite(v).all() for v in checkpoint.backbone.values() if v.is_floating_point())
        assert torch.isfinite(checkpoint.classifier).all()
