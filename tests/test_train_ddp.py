"""Two-process gloo DDP on CPU: the sharded step matches one process, and torchrun runs checkpoint/resume."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from topofr_cli.artifacts.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints
from topofr_cli.artifacts.run_dir import read_metrics
from topofr_cli.config import PTSAConfig, RSPConfig, TopoFRConfig
from topofr_cli.engine.build import wrap_backbone
from topofr_cli.engine.distributed import DistContext, setup_distributed, teardown_distributed
from topofr_cli.engine.objective import PlainObjective
from topofr_cli.engine.step import TrainStep
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.hardness.sds import sde_weights
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


ALPHA = 0.1


def topofr_config(scope: str) -> TopoFRConfig:
    # RSP off: its draws are per rank, so two ranks and one process would perturb different samples
    return TopoFRConfig(enabled=True, ptsa=PTSAConfig(alpha=ALPHA, scope=scope), rsp=RSPConfig(enabled=False))


class LocalScopeReference(TopoFRObjective):
    """One process computing what two ranks of local-scope PTSA mean: the mean of the halves' losses."""

    def forward(self, *, x_topology, embeddings, output, step):
        w1, w2, _ = sde_weights(output.entropy, output.p_true, 1.0, "fixed")
        half = x_topology.shape[0] // 2
        topo = 0.5 * (
            self.ptsa(x_topology[:half], embeddings[:half]) + self.ptsa(x_topology[half:], embeddings[half:])
        )
        loss_cls = (w1 * w2 * output.ce).mean()
        return loss_cls + ALPHA * topo, {"loss_cls": loss_cls.detach()}


def _objective(kind: str, world_size: int, reference: bool = False) -> nn.Module:
    if kind == "plain":
        return PlainObjective()
    if kind == "local" and reference:
        return LocalScopeReference(topofr_config("local"))
    return TopoFRObjective(topofr_config(kind), world_size=world_size)


KINDS = ("plain", "global", "local")


def _one_step(ctx: DistContext, objective: nn.Module, images, labels, backbone, weight):
    classifier = PartialFC(EMBED, CLASSES, CombinedMarginHead(scale=8.0, m2=0.3))
    classifier.load_full_weight(weight)
    model = wrap_backbone(backbone, ctx)  # as the trainer wraps it (engine.build)
    opts = [
        torch.optim.SGD([*backbone.parameters(), *objective.parameters()], lr=0.5, momentum=0.9, fused=True),
        torch.optim.SGD(classifier.parameters(), lr=0.5, momentum=0.9, fused=True),
    ]
    step = TrainStep(
        backbone=model,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=objective,
        optimizers=opts,
        precision="fp32",
        dist_ctx=ctx,
        clip_grad_norm=None,
        channels_last=False,
        horizontal_flip=False,
        seed=0,
    )
    result = step(images, labels, 0)
    return {
        "backbone": backbone[1].weight.detach().clone(),
        "classifier": classifier.full_weight(),
        "loss_cls": result.terms.get("loss_cls", result.loss),
        "scale": [p.detach().clone() for p in objective.parameters()],
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    try:
        for kind in KINDS:
            images, labels, backbone, weight = _inputs()
            half = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
            got = _one_step(ctx, _objective(kind, 2), images[half], labels[half], backbone, weight)
            torch.save(got, Path(out_dir) / f"{kind}{rank}.pt")
    finally:
        teardown_distributed(ctx)


def test_two_rank_steps_equal_one_process_steps(tmp_path):
    """Plain ArcFace, TopoFR with global-scope PTSA, and with local-scope PTSA (= mean of per-rank losses):
    after one step on two ranks, backbone, classifier shards and λ equal one process on the whole batch."""
    single_ctx = DistContext(0, 0, 1, torch.device("cpu"), None)
    expected = {}
    for kind in KINDS:
        images, labels, backbone, weight = _inputs()
        expected[kind] = _one_step(
            single_ctx, _objective(kind, 1, reference=True), images, labels, backbone, weight
        )
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for kind in KINDS:
        for rank in range(2):
            got = torch.load(tmp_path / f"{kind}{rank}.pt", weights_only=True)
            for key in ("backbone", "classifier", "loss_cls", "scale"):
                torch.testing.assert_close(
                    got[key],
                    expected[kind][key],
                    rtol=1e-5,
                    atol=1e-6,
                    msg=lambda m, k=key, r=rank, n=kind: f"{n} {k} rank {r}: {m}",
                )
    assert not torch.allclose(expected["plain"]["classifier"], _inputs()[3])  # the step moved the classifier
    assert expected["local"]["scale"][0].item() != 0.0  # λ moved: its gradient is compared too


def test_torchrun_two_processes_checkpoint_and_resume(make_tiny_dataset, tiny_recipe_file, tmp_path):
    data = make_tiny_dataset(tmp_path / "data", classes=5, per_class=7, pairs=0)  # 35 images: 2 steps/epoch
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run", extra="")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "topofr_cli", "train", str(recipe), "--nproc-per-node", "2", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )

    first = run("--set", "schedule.max_steps=1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [0, 1]
    second = run("--set", "schedule.max_steps=3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    ckpt = Checkpoint.read(latest_checkpoint(tmp_path / "run"))
    assert ckpt.step == 3 and ckpt.training["world_size"] == 2
    assert ckpt.classifier.shape == (5, 32)  # merged from both shards (3 + 2 rows)
    momentum = ckpt.training["classifier_optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.shape == (5, 32) and momentum.abs().sum(1).gt(0).all()  # both shards' rows were trained
    assert len(ckpt.training["rng"]) == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run/metrics.csv")] == ["1", "2", "3"]
