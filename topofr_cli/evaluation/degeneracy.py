"""Is an embedding degenerate? A collapsed model maps every face to (almost) the same direction.

Such a model has tiny input–latent diagram distances in the L2-normalised space's *shape* terms
and can look best on every topology panel, so figures and reports flag it. The test is the mean
cosine similarity between embeddings of *different* images: near 0 for a useful face model (different
people point in different directions), near 1 for a collapsed one.
"""

from __future__ import annotations

import numpy as np

# A mean cosine this close to 1 leaves less than ~26° between typical embeddings: no room for identities.
DEGENERATE_MEAN_COSINE = 0.9


def embedding_degeneracy(emb: np.ndarray, threshold: float = DEGENERATE_MEAN_COSINE) -> tuple[float, bool]:
    """(mean cosine over all pairs i ≠ j, whether it exceeds `threshold`) of embeddings [n, E].

    Computed from the sum of the unit vectors, ‖Σ ẑ‖² = n + Σ_{i≠j} cos(ẑ_i, ẑ_j), so it is O(n·E)
    with no n × n matrix. Zero vectors count as orthogonal to everything. Embeddings holding a NaN or
    an infinity are degenerate whatever else they hold (mean cosine NaN): no direction can be read.
    """
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 2:
        raise ValueError(f"embedding_degeneracy needs [n >= 2, E] embeddings, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        return float("nan"), True
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    n = len(unit)
    total = unit.sum(axis=0)
    mean = (float(total @ total) - float(np.sum(unit * unit))) / (n * (n - 1))
    return mean, mean > threshold


def degenerate_message(what: str, mean_cosine: float) -> str:
    """The one wording for a collapsed model, whichever command (eval, train, ...) finds it."""
    return (
        f"{what}: degenerate embeddings (mean cosine between different images {mean_cosine:.4f}); "
        "the model maps every face to nearly the same direction, so its scores say little"
    )
