"""Two-process gloo DDP on CPU: the sharded step matches one process, and torchrun runs checkpoint/resume."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_train_support import make_tiny_dataset, tiny_recipe_file
from torch import nn

from topofr_cli.config import load_recipe
from topofr_cli.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from topofr_cli.engine.distributed import DistContext, setup_distributed, teardown_distributed
from topofr_cli.engine.metrics import read_metrics
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.step import TrainStep
from topofr_cli.engine.trainer import _wrap_backbone
from topofr_cli.models import CombinedMarginHead, PartialFC

CLASSES, EMBED, BATCH = 5, 8, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 3, 112, 112), dtype=torch.uint8, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, EMBED))  # no BatchNorm: batch-split exact
    weight = torch.randn(CLASSES, EMBED) * 0.1
    return images, labels, backbone, weight


def _one_step(ctx: DistContext, images, labels, backbone, weight):
    classifier = PartialFC(EMBED, CLASSES, CombinedMarginHead(scale=8.0, m2=0.3))
    classifier.load_full_weight(weight)
    model = _wrap_backbone(load_recipe(None, ["train.compile=false"]), backbone, ctx)
    opts = [torch.optim.SGD(backbone.parameters(), lr=0.5, momentum=0.9, fused=True),
            torch.optim.SGD(classifier.parameters(), lr=0.5, momentum=0.9, fused=True)]
    step = TrainStep(backbone=model, backbone_params=list(backbone.parameters()), classifier=classifier,
                     objective=PlainObjective(), optimizers=opts, precision="fp32", dist_ctx=ctx,
                     clip_grad_norm=None, channels_last=False, horizontal_flip=False, seed=0)
    result = step(images, labels, 0)
    return backbone[1].weight.detach().clone(), classifier.full_weight(), result.loss


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    try:
        images, labels, backbone, weight = _inputs()
        half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        w, c, loss = _one_step(ctx, images[half], labels[half], backbone, weight)
        torch.save({"backbone": w, "classifier": c, "loss": loss}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        teardown_distributed(ctx)


def test_two_rank_step_equals_one_process_step(tmp_path):
    images, labels, backbone, weight = _inputs()
    single = _one_step(DistContext(0, 0, 1, torch.device("cpu"), None), images, labels, backbone, weight)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        # backbone gradients summed (not averaged) over ranks: same update as one process on the global batch
        torch.testing.assert_close(got["backbone"], single[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["classifier"], single[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["loss"], single[2])
    assert not torch.allclose(single[1], weight)  # the step did move the classifier


def test_torchrun_two_processes_checkpoint_and_resume(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", classes=5, per_class=7, pairs=0)  # 35 images: 2 steps/epoch
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run", extra="")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "topofr_cli", "train", str(recipe), "--nproc-per-node", "2",
                               *args], capture_output=True, text=True, env=env, timeout=240)

    first = run("--set", "schedule.max_steps=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1]
    second = run("--set", "schedule.max_steps=3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt["step"] == 3 and ckpt["training"]["world_size"] == 2
    assert ckpt["classifier"].shape == (5, 32)  # merged from both shards (3 + 2 rows)
    momentum = ckpt["training"]["classifier_optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.shape == (5, 32) and momentum.abs().sum(1).gt(0).all()  # both shards' rows were trained
    assert len(ckpt["training"]["rng"]) == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run/metrics.csv")] == ["1", "2", "3"]
