"""Multi-process launch through torchrun (torch.distributed.run): `topofr train --nproc-per-node N`
re-runs itself as `torchrun … -m topofr_cli train …` so that workers read RANK/LOCAL_RANK/WORLD_SIZE
from the environment exactly as when a user calls torchrun directly."""

from __future__ import annotations

from dataclasses import dataclass

from topofr_cli.errors import TopofrError


@dataclass(frozen=True)
class LaunchSpec:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "topofr"

    @property
    def needs_launcher(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1

    def validate(self) -> None:
        if self.nproc_per_node < 1:
            raise TopofrError(f"--nproc-per-node must be >= 1, got {self.nproc_per_node}")
        if self.nnodes < 1:
            raise TopofrError(f"--nnodes must be >= 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise TopofrError(f"--node-rank must be within [0, {self.nnodes - 1}], got {self.node_rank}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise TopofrError("--rdzv-endpoint HOST:PORT is required when --nnodes > 1")


def torchrun_argv(spec: LaunchSpec, worker_args: list[str]) -> list[str]:
    """torchrun's own arguments followed by `-m topofr_cli train …` for each worker."""
    argv = [f"--nproc-per-node={spec.nproc_per_node}"]
    if spec.nnodes == 1 and not spec.rdzv_endpoint:
        argv.append("--standalone")  # a free local port, no rendezvous server to start
    else:
        argv += [
            f"--nnodes={spec.nnodes}",
            f"--node-rank={spec.node_rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={spec.rdzv_endpoint}",
            f"--rdzv-id={spec.rdzv_id}",
        ]
    return [*argv, "--module", "topofr_cli", "train", *worker_args]


def launch(spec: LaunchSpec, worker_args: list[str]) -> None:
    """Run the workers through torchrun; a failed worker (which printed its own error) becomes one line."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    spec.validate()
    try:
        torchrun_main(torchrun_argv(spec, worker_args))
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        raise TopofrError(
            f"training failed in {len(exc.failures)} worker process(es) (exit code {codes}); "
            "see the worker messages above"
        ) from None
