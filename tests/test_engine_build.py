"""One builder for every training step: the bench's step is the trainer's step.

The trainer runs three steps and writes its checkpoint; the bench builds its step from the same recipe
(`bench.steps.bench_recipe` + `make_train_step`) and takes the same three batches. With a constant
learning rate (no warm-up, power 0: the loop's schedule then sets what the optimizer was built with),
the weights, the classifier and TopoFR's λ must come out bit-identical.
"""

from __future__ import annotations

import pytest
import torch

from topofr_cli.artifacts.checkpoint import Checkpoint, checkpoint_path
from topofr_cli.bench.steps import (
    KINDS,
    bench_precision,
    bench_recipe,
    interleave_order,
    interleaved_times_ms,
    make_train_step,
    summarize,
)
from topofr_cli.data import open_dataset
from topofr_cli.data.loader import make_train_loader
from topofr_cli.engine.build import build
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.trainer import train

CPU = DistContext(0, 0, 1, torch.device("cpu"), None)
STEPS, BATCH, CLASSES = 3, 8, 4


@pytest.mark.parametrize("kind", ["plain", "topofr"])
def test_the_bench_step_is_the_trainer_step(kind, make_tiny_dataset, tmp_path):
    data = make_tiny_dataset(tmp_path / "data", classes=CLASSES, per_class=8, pairs=0)
    recipe = bench_recipe(
        "mbf",
        kind=kind,
        batch=BATCH,
        precision="fp32",
        overrides=[
            f"data.path={data}",
            "data.num_workers=0",
            f"train.output={tmp_path / 'run'}",
            "train.device=cpu",
            f"schedule.max_steps={STEPS}",
            "schedule.power=0",
            "model.embedding_size=32",
        ],
    )
    result = train(recipe, progress=False)
    assert result.steps == STEPS
    trained = Checkpoint.read(checkpoint_path(tmp_path / "run", STEPS))

    step = make_train_step(recipe, CLASSES, CPU)
    loader = make_train_loader(open_dataset(data), BATCH, num_workers=0, seed=recipe.train.seed)
    loader.sampler.set_epoch(0)
    for index, (images, labels) in zip(range(STEPS), loader, strict=False):
        step(images, labels, index)

    for name, value in step.backbone.state_dict().items():
        assert torch.equal(value, trained.backbone[name]), name
    assert torch.equal(step.classifier.full_weight().cpu(), trained.classifier)
    if kind == "topofr":  # λ moved, at the trainer's (slower) rate
        (log_scale,) = (p for p in step.objective.parameters() if p.requires_grad)
        assert log_scale.item() != 0.0
        assert torch.equal(step.objective.state_dict()["ptsa.log_scale"], trained.objective["ptsa.log_scale"])


def test_lambda_has_its_own_group_at_the_trainers_rate():
    recipe = bench_recipe("mbf", kind="topofr", batch=4, precision="fp32")
    setup = build(recipe, CPU, num_classes=10)
    backbone_group, scale_group = setup.parts.backbone_optimizer.param_groups
    multiplier = recipe.topofr.ptsa.scale_lr_multiplier
    assert scale_group["weight_decay"] == 0.0 and scale_group["lr"] == pytest.approx(
        recipe.optim.lr * multiplier
    )
    assert backbone_group["lr"] == recipe.optim.lr
    assert setup.step.scaler is setup.parts.scaler is None  # fp32: no GradScaler


def test_plain_and_topofr_recipes_differ_in_one_key():
    plain = bench_recipe("r18", batch=16, precision="bf16").to_dict()
    topofr = bench_recipe("r18", kind="topofr", batch=16, precision="bf16").to_dict()
    assert {k: v for k, v in topofr.items() if k != "topofr"} == {
        k: v for k, v in plain.items() if k != "topofr"
    }
    assert {**topofr["topofr"], "enabled": False} == plain["topofr"] and topofr["topofr"]["enabled"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 runs as bf16 on the CPU: no GradScaler")
def test_fp16_parts_own_the_scaler_the_step_uses():
    recipe = bench_recipe("mbf", batch=4, precision="fp16")
    setup = build(recipe, DistContext(0, 0, 1, torch.device("cuda"), None), num_classes=10)
    assert setup.step.scaler is setup.parts.scaler is not None


def test_interleaved_order_alternates_and_balances():
    assert interleave_order(["plain", "topofr"], 4) == [
        "plain",
        "topofr",
        "topofr",
        "plain",
        "plain",
        "topofr",
        "topofr",
        "plain",
    ]
    order = interleave_order(["a", "b"], 7)
    assert order.count("a") == order.count("b") == 7


def test_steps_are_timed_interleaved_after_every_warm_up_and_rounds_are_never_cut():
    calls = []
    steps = {name: (lambda images, labels, index, name=name: calls.append((name, index))) for name in KINDS}
    images, labels = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)
    times = interleaved_times_ms(steps, images, labels, warmup=2, rounds=3)
    assert calls == [
        ("plain", 0), ("plain", 1), ("topofr", 0), ("topofr", 1),  # warm-up, untimed
        ("plain", 2), ("topofr", 2), ("topofr", 3), ("plain", 3), ("plain", 4), ("topofr", 4),
    ]  # fmt: skip
    assert [len(t) for t in times.values()] == [3, 3]
    capped = interleaved_times_ms(steps, images, labels, warmup=0, rounds=5, time_cap_s=0.0)
    assert [len(t) for t in capped.values()] == [1, 1]  # the cap stops after a whole round


def test_summary_pairs_rounds():
    times = {"plain": [10.0, 20.0, 10.0], "topofr": [20.0, 30.0, 15.0]}  # ratios 2, 1.5, 1.5
    row = summarize(times)
    assert row["rounds"] == 3 and row["plain_ms"] == 10.0 and row["topofr_ms"] == 20.0
    assert row["topofr_over_plain"] == 1.5  # the median of the paired ratios, not 20 / 10
    assert row["topofr_over_plain_quartiles"] == [1.5, 1.75]


def test_precision_follows_the_device():
    assert bench_precision(torch.device("cpu")) == "fp32"
    assert bench_precision(torch.device("cpu"), "auto") == "fp32"
    assert bench_precision(torch.device("cpu"), "bf16") == "bf16"  # asked for
    if torch.cuda.is_available():
        expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        assert bench_precision(torch.device("cuda")) == expected
