"""The structure collapse curve: input–latent diagram distances of a run's checkpoints against step.

A run directory holds `checkpoints/step_XXXXXXXX.pt` (docs/interfaces.md, Engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.checkpoint import list_checkpoints
from topofr_cli.errors import TopofrError

if TYPE_CHECKING:  # the pipeline imports this module; annotations only, no import cycle at runtime
    from topofr_cli.analysis.pipeline import Target

CURVE_METRICS = ("bottleneck", "wasserstein_1", "wasserstein_2")
CURVE_COLUMNS = (
    "run",
    "step",
    "space",
    "dim",
    *CURVE_METRICS,
    "ptsa_official",
    "ptsa_symmetric",
    "shared_h0_fraction",
    "mean_cosine",
    "degenerate",
    "accuracy",
    "accuracy_std",
)


def run_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoints/step_*.pt` in `run_dir`, by step; an error if there are none."""
    found = list_checkpoints(run_dir)
    if not found:
        raise TopofrError(f"{run_dir}: run directory has no checkpoints/step_*.pt")
    return sorted(found)


def curve_rows(targets: list[Target]) -> list[dict[str, Any]]:
    """One row per (target, checkpoint, latent space, dimension), the columns of CURVE_COLUMNS.

    Model files appear with their checkpoint's step (None for files without one). The PTSA terms, the
    shared-edge fraction, the degeneracy and the held-out accuracy (None without a held-out .bin) do
    not depend on the dimension; they repeat on each row of a point.
    """
    rows = []
    for target in targets:
        for point in target.points:
            for space, comparison in point.comparisons.items():
                for dim, distances in comparison.distances.items():
                    rows.append(
                        {
                            "run": target.label,
                            "step": point.step,
                            "space": space,
                            "dim": dim,
                            **distances.as_dict(),
                            "ptsa_official": comparison.ptsa_official,
                            "ptsa_symmetric": comparison.ptsa_symmetric,
                            "shared_h0_fraction": comparison.shared_h0_fraction,
                            "mean_cosine": point.mean_cosine,
                            "degenerate": point.degenerate,
                            "accuracy": point.verification.accuracy if point.verification else None,
                            "accuracy_std": point.verification.accuracy_std if point.verification else None,
                        }
                    )
    return rows
