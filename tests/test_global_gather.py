"""Global-scope PTSA exchanges uint8 images instead of float32 ones, with the input space unchanged bit for bit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from topofr_cli.data.loader import normalize
from topofr_cli.engine.topofr_objective import gather_input_space, gather_with_local_grad, pixels_of


def test_every_grey_level_round_trips_through_normalize():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    x = normalize(levels)
    assert torch.equal(pixels_of(x), levels)
    assert torch.equal(normalize(pixels_of(x)).view(torch.int32), x.view(torch.int32))  # same bits
    assert torch.equal(pixels_of(x.flip(3)), levels.flip(3))  # the step's flip commutes with it


def test_one_process_gathers_nothing():
    x = normalize(torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8))
    assert gather_input_space(x, 1, from_pixels=True) is x


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        images = torch.randint(
            0, 256, (4, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(rank)
        )
        x = normalize(images)
        x = torch.where(torch.tensor([True, False, True, False])[:, None, None, None], x.flip(3), x)
        torch.save(
            {"pixels": gather_input_space(x, 2, from_pixels=True), "float": gather_with_local_grad(x, 2)},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_two_ranks_gathering_pixels_equal_gathering_float32(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["pixels"].shape == (8, 3, 112, 112)
        assert torch.equal(got["pixels"].view(torch.int32), got["float"].view(torch.int32))
