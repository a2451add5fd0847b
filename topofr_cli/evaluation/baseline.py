"""The raw-pixel baseline: how well a `.bin` is verified with no model at all (docs/method.md §3.3).

A trained model should beat it clearly; `topofr train` prints it beside the model's accuracy and
`topofr prepare synthetic` records it in the dataset's meta.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topofr_cli.data.bins import read_bin
from topofr_cli.data.images import decode_image
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.protocol import VerificationResult, verification_metrics_from_distances


def pixel_baseline(bin_path: str | Path, chunk_pairs: int = 256) -> VerificationResult:
    """Verification of raw pixels as embeddings.

    Each image in model input scale [-1, 1] plus its horizontal flip is the "embedding"; pairs are
    compared by squared L2 distance after L2 normalisation (i.e. by cosine). Done in chunks of
    pairs so memory stays small for large pair lists.
    """
    pairs = read_bin(bin_path)
    distances = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk_pairs):
        stop = min(start + chunk_pairs, len(pairs))
        try:
            pixels = np.stack([decode_image(pairs.images[i]) for i in range(2 * start, 2 * stop)])
        except (TopofrError, ValueError) as exc:
            raise TopofrError(f"{bin_path}: images {2 * start}..{2 * stop - 1}: {exc}") from None
        x = pixels.astype(np.float32) / 127.5 - 1.0
        features = (x + x[:, :, ::-1]).reshape(len(x), -1)
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        distances[start:stop] = np.sum(np.square(features[0::2] - features[1::2]), axis=1)
    return verification_metrics_from_distances(distances, pairs.issame)


def pixel_baseline_accuracy(bin_path: str | Path) -> float:
    """Mean 10-fold accuracy of the raw-pixel baseline on a `.bin` (see `pixel_baseline`)."""
    return pixel_baseline(bin_path).accuracy_mean


def pixel_baselines(bins: list[Path]) -> dict[str, float]:
    """`pixel_baseline_accuracy` of each `.bin`, by file stem (the name training reports scores under)."""
    return {path.stem: pixel_baseline_accuracy(path) for path in bins}
