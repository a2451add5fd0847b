"""The structure collapse curve: input–latent diagram distances against training step, one line per run.

Rows are those of `topofr_cli.analysis.collapse.curve_rows` (run, step, space, dim, bottleneck,
wasserstein_1, wasserstein_2, ptsa_official, ptsa_symmetric, shared_h0_fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from topofr_cli.artifacts.atomic import write_figure

DISTANCE_PANELS = (("bottleneck", "bottleneck"), ("wasserstein_1", "Wasserstein p=1"),
                   ("wasserstein_2", "Wasserstein p=2"))
PTSA_PANELS = (("ptsa_official", "PTSA loss (official form)"), ("ptsa_symmetric", "PTSA loss (symmetric form)"),
               ("shared_h0_fraction", "shared H0 pairs (MST edges)"))


def _series(rows: Sequence[dict[str, Any]], run: str, space: str, dim: int, key: str) -> tuple[list, list]:
    points = sorted((row["step"], row[key]) for row in rows
                    if row["run"] == run and row["space"] == space and row["dim"] == dim and row["step"] is not None)
    return [p[0] for p in points], [p[1] for p in points]


def plot_collapse_curves(rows: Sequence[dict[str, Any]], path: Path, *, space: str = "latent") -> Path:
    """Panels: one row per homology dimension (bottleneck, W1, W2), and a last row with the PTSA loss
    forms and the shared-H0 fraction; each run is one line (legend = run name)."""
    runs = list(dict.fromkeys(row["run"] for row in rows))
    dims = sorted({row["dim"] for row in rows})
    figure = Figure(figsize=(15, 3.6 * (len(dims) + 1)), layout="constrained")
    grid = figure.subplots(len(dims) + 1, 3, squeeze=False)
    panels = [(dim, key, f"H{dim} {title}") for dim in dims for key, title in DISTANCE_PANELS]
    # The PTSA terms repeat on every dimension's rows; read them from the first.
    panels += [(dims[0] if dims else 0, key, title) for key, title in PTSA_PANELS]
    for axes, (dim, key, title) in zip(grid.flat, panels, strict=True):
        for run in runs:
            steps, values = _series(rows, run, space, dim, key)
            axes.plot(steps, values, marker="o", ms=4, label=run)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("training step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    grid.flat[0].legend(loc="best")
    figure.suptitle(f"structure collapse curve: input space vs {space} space")
    return write_figure(figure, path, dpi=110)
