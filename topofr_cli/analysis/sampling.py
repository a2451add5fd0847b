"""Reproducible samples of a dataset for topology analysis, optionally K images per identity."""

from __future__ import annotations

import numpy as np

from topofr_cli.errors import TopofrError


def draw_sample(
    labels: np.ndarray,
    samples: int,
    *,
    per_identity: int | None = None,
    seed: int = 0,
    source: str = "dataset",
) -> np.ndarray:
    """Indices (ascending) of `samples` images chosen with a seeded generator.

    Without `per_identity` the images are drawn uniformly without replacement. With K =
    `per_identity`, whole identities are drawn (among those with at least K images) and K of each
    identity's images taken, so the sample contains identity clusters; the last identity drawn
    contributes fewer than K when `samples` is not a multiple of K. The same labels, size and seed
    always give the same indices. `source` names the dataset in error messages.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if samples < 2:
        raise TopofrError(f"{source}: --samples must be at least 2, got {samples}")
    if samples > len(labels):
        raise TopofrError(f"{source}: has {len(labels)} images, fewer than the {samples} samples requested")
    rng = np.random.default_rng(seed)
    if per_identity is None:
        return np.sort(rng.choice(len(labels), size=samples, replace=False))
    if per_identity < 1:
        raise TopofrError(f"{source}: --per-identity must be at least 1, got {per_identity}")
    # Group image indices by label once: a stable sort keeps each identity's images in file order.
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    eligible = np.flatnonzero(counts >= per_identity)
    needed = -(-samples // per_identity)
    if len(eligible) < needed:
        raise TopofrError(
            f"{source}: only {len(eligible)} identities have at least {per_identity} images; "
            f"{samples} samples with --per-identity {per_identity} need {needed} "
            f"(fewer samples than requested)"
        )
    chosen = rng.choice(eligible, size=needed, replace=False)
    picked = []
    for slot in chosen:
        members = order[starts[slot] : starts[slot] + counts[slot]]
        picked.append(rng.choice(members, size=per_identity, replace=False))
    indices = np.concatenate(picked)[:samples]
    return np.sort(indices)
