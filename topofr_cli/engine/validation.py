"""Periodic verification during training (REFERENCE §3.3, 10-fold accuracy) and the raw-pixel baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from topofr_cli.data.bins import read_bin
from topofr_cli.data.images import decode_image
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.protocol import VerificationResult, verification_metrics
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


def verify(backbone: torch.nn.Module, bins: list[Path], *, device: torch.device,
           batch_size: int) -> list[BinScore]:
    """Accuracy of `backbone` on each `.bin`; the module is put back in training mode afterwards."""
    was_training = backbone.training
    backbone.eval()
    try:
        scores = []
        for path in bins:
            result: VerificationResult = evaluate_bin(backbone, path, batch_size=batch_size, flip=True,
                                                      device=device)
            scores.append(BinScore(bin_label(path), result.accuracy_mean, result.accuracy_std))
        return scores
    finally:
        backbone.train(was_training)


def pixel_baseline(bin_path: Path) -> float:
    """10-fold accuracy of raw pixels as the embedding ([-1, 1] values, flip-summed like a model's):
    what a model must clearly beat to have learned anything about identity."""
    pairs = read_bin(bin_path)
    features = []
    for index, encoded in enumerate(pairs.images):
        try:
            rgb = decode_image(encoded).astype(np.float32)
        except Exception as exc:  # a broken image is a broken file: name it
            raise TopofrError(f"{bin_path}: image {index}: {exc}") from None
        x = rgb / 127.5 - 1.0
        features.append((x + x[:, ::-1]).reshape(-1))
    return verification_metrics(np.stack(features), pairs.issame).accuracy_mean
