"""Periodic verification during training (docs/method.md §3.3, 10-fold accuracy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.protocol import VerificationResult
from topofr_cli.evaluation.verification import evaluate_bin


def verification_bins(extra_bins: list[str], dataset_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """The recipe's `data.val_bins` followed by the dataset's meta `verification_bins` (relative to it)."""
    bins = [Path(p) for p in extra_bins]
    for name in meta.get("verification_bins") or []:
        path = dataset_dir / str(name)
        if not path.is_file():
            raise TopofrError(f"{dataset_dir / 'meta.json'}: verification_bins entry {name} does not exist")
        bins.append(path)
    return bins


def bin_label(path: Path) -> str:
    return path.stem


@dataclass
class BinScore:
    name: str
    accuracy: float
    accuracy_std: float
    path: Path  # the `.bin` scored
    mean_cosine: float | None = None  # between embeddings of different images (evaluation.degeneracy)
    degenerate: bool = False


def verify(
    backbone: torch.nn.Module, bins: list[Path], *, device: torch.device, batch_size: int
) -> list[BinScore]:
    """Accuracy of `backbone` on each `.bin`; the module is put back in training mode afterwards."""
    was_training = backbone.training
    backbone.eval()
    try:
        scores = []
        for path in bins:
            result: VerificationResult = evaluate_bin(
                backbone, path, batch_size=batch_size, flip=True, device=device
            )
            scores.append(
                BinScore(
                    bin_label(path),
                    result.accuracy_mean,
                    result.accuracy_std,
                    path,
                    mean_cosine=result.mean_cosine,
                    degenerate=result.degenerate,
                )
            )
        return scores
    finally:
        backbone.train(was_training)
