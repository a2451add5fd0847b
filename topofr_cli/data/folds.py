"""How a verification pair list is cut into the protocol's folds (docs/method.md §3.3).

It lives with the data because a pair list is built for it: a `.bin` whose folds are not each
half genuine, half impostor scores differently, so the synthetic generator lays its pairs out per fold.
"""

from __future__ import annotations

import numpy as np

NUM_FOLDS = 10


def kfold_splits(num_items: int, num_folds: int = NUM_FOLDS) -> list[np.ndarray]:
    """Contiguous test folds, no shuffle; the first `num_items % num_folds` folds are one larger.

    This is the split of sklearn's `KFold(num_folds, shuffle=False)`, which insightface uses.
    """
    if num_items < num_folds:
        raise ValueError(f"{num_items} pairs cannot be split into {num_folds} folds")
    sizes = np.full(num_folds, num_items // num_folds, dtype=np.int64)
    sizes[: num_items % num_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(num_folds)]
