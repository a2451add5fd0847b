"""Verification on `.bin` pair files (lfw.bin, cfp_fp.bin, …): decode, embed, run the §3.3 protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.config import Recipe
from topofr_cli.data.bins import VerificationPairs, read_bin
from topofr_cli.data.folds import NUM_FOLDS
from topofr_cli.data.images import ImageDecodeError, decode_image
from topofr_cli.data.ordered import GuardedImages, iterate_batches
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.degeneracy import embedding_degeneracy
from topofr_cli.evaluation.embed import embed_images
from topofr_cli.evaluation.protocol import VerificationResult, verification_metrics


class BinImageLoader:
    """Picklable `load(i)` over a `.bin`'s images; a bad image names the file and its index."""

    def __init__(self, images: list, path: Path):
        self.images = images
        self.path = path

    def __call__(self, index: int) -> np.ndarray:
        try:
            return decode_image(self.images[index])
        except ImageDecodeError as exc:
            raise TopofrError(f"{self.path}: image {index} (pair {index // 2}): {exc}") from None


def evaluate_pairs(
    backbone: Any,
    pairs: VerificationPairs,
    path: Path,
    *,
    batch_size: int = 64,
    flip: bool = True,
    device="cpu",
    num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> VerificationResult:
    """`evaluate_bin` on pairs already read from `path` (named in errors)."""
    if len(pairs) < NUM_FOLDS:
        raise TopofrError(f"{path}: {len(pairs)} pairs; the 10-fold protocol needs at least {NUM_FOLDS}")
    images = GuardedImages(BinImageLoader(pairs.images, path), len(pairs.images))
    batches = iterate_batches(images, batch_size=batch_size, num_workers=num_workers, on_images=on_images)
    embeddings = embed_images(backbone, batches, flip=flip, device=device)
    result = verification_metrics(embeddings, pairs.issame)
    result.mean_cosine, result.degenerate = embedding_degeneracy(embeddings)
    return result


def evaluate_bin(
    backbone: Any,
    bin_path: str | Path,
    *,
    batch_size: int = 64,
    flip: bool = True,
    device="cpu",
    num_workers: int = 0,
    on_images: Callable[[int], None] | None = None,
) -> VerificationResult:
    """Accuracy (10-fold mean ± std), best threshold, VAL@FAR=1e-3 and AUC of `backbone` on a `.bin`.

    `on_images(n)` is called after each batch of n images (progress bars); the number of images is
    twice the number of pairs.
    """
    path = Path(bin_path)
    return evaluate_pairs(
        backbone,
        read_bin(path),
        path,
        batch_size=batch_size,
        flip=flip,
        device=device,
        num_workers=num_workers,
        on_images=on_images,
    )


def default_verification_bins(recipe: Recipe | None, model_path: str | Path) -> list[Path]:
    """The held-out `.bin` files of the dataset a checkpoint was trained on (recipe → data.path →
    meta.json `verification_bins`), or a TopofrError saying why there are none."""
    hint = "pass --bin FILE (e.g. --bin lfw.bin)"
    data_path = recipe.data.path if recipe is not None else None
    if not data_path:
        raise TopofrError(f"{model_path}: no --bin given and the model records no training dataset; {hint}")
    meta_file = Path(data_path) / "meta.json"
    if not meta_file.is_file():
        raise TopofrError(
            f"{model_path}: no --bin given and its training set {data_path} has no meta.json "
            f"(not found from {Path.cwd()}); {hint}"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TopofrError(f"{meta_file}: not valid JSON ({exc})") from None
    names = meta.get("verification_bins") or [] if isinstance(meta, dict) else []
    if not isinstance(names, list) or not names:
        raise TopofrError(f"{model_path}: no --bin given and {meta_file} lists no verification_bins; {hint}")
    bins = [Path(data_path) / str(name) for name in names]
    for path in bins:
        if not path.is_file():
            raise TopofrError(f"{meta_file}: verification_bins entry {path.name} does not exist")
    return bins
