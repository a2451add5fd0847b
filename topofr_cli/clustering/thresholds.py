"""The distance threshold τ of a clustering: given, set at a false-accept rate on verification pairs,
or at the gap of the H0 persistence diagram (docs/method.md §7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from topofr_cli.errors import TopofrError


@dataclass
class ThresholdAtFar:
    threshold: float  # cosine distance; a pair at or below it is accepted
    far: float  # measured on the impostor pairs
    tar: float  # measured on the genuine pairs
    impostors: int


def threshold_at_far(
    distances: np.ndarray, issame: np.ndarray, far: float, source: str = "pairs"
) -> ThresholdAtFar:
    """The largest threshold whose false-accept rate is at most `far`: it accepts the floor(far · n)
    closest impostor pairs (fewer on ties) and no more."""
    distances = np.asarray(distances, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    impostors = np.sort(distances[~issame])
    if len(impostors) == 0 or not issame.any():
        raise TopofrError(f"{source}: needs genuine and impostor pairs to set a threshold at a FAR")
    if not 0 < far < 1:
        raise TopofrError(f"--far {far}: expected a rate between 0 and 1")
    allowed = math.floor(far * len(impostors) + 1e-9)
    threshold = float(np.nextafter(impostors[allowed], -np.inf)) if allowed < len(impostors) else 2.0
    return ThresholdAtFar(
        threshold,
        float(np.mean(impostors <= threshold)),
        float(np.mean(distances[issame] <= threshold)),
        len(impostors),
    )
