"""Figures for `topofr hard-samples`: score distributions with the fitted GUM, and a gallery.

The gallery puts each flagged image beside the most typical images of its labelled identity and
of the identity the model predicts, so a person can tell a mislabel from a hard image at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from topofr_cli.artifacts.atomic import write_figure
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.hardness.ranking import HardnessTable

FLAGGED_COLOR = "#d62728"
LABELLED_COLOR = "#1f77b4"
PREDICTED_COLOR = "#2ca02c"


def gum_density(x: np.ndarray, pi: float, sigma2: float, c: float) -> np.ndarray:
    """π·N(x; 0, σ²) + (1 − π)·c, the mixture the SDE fits (REFERENCE §1.3)."""
    gaussian = np.exp(-0.5 * x**2 / sigma2) / np.sqrt(2.0 * np.pi * sigma2)
    return pi * gaussian + (1.0 - pi) * c


def plot_distributions(table: HardnessTable, path: Path) -> Path:
    """Histogram of SDS, and of the GUM input statistic with the fitted mixture overlaid."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    sds_axes, gum_axes = figure.subplots(1, 2)
    sds_axes.hist(table.sds, bins=60, color="#7f7f7f")
    sds_axes.set_yscale("log")
    sds_axes.set_xlabel("structure damage score  SDS = w1 · w2")
    sds_axes.set_ylabel("images")
    sds_axes.set_title(f"SDS over {len(table):,} images")

    gum_axes.hist(table.gum_input, bins=80, density=True, color="#aec7e8", label="GUM input")
    if table.gum is not None:
        fit = table.gum
        lo, hi = np.min(table.gum_input), np.max(table.gum_input)
        grid = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 400)
        gum_axes.plot(grid, gum_density(grid, fit.pi, fit.sigma2, fit.c), color="#d62728",
                      label=f"GUM fit (π={fit.pi:.3f}, σ²={fit.sigma2:.3f}, c={fit.c:.3f})")
        gum_axes.plot(grid, fit.pi * gum_density(grid, 1.0, fit.sigma2, 0.0), "--", color="#ff9896",
                      label="π·N(0, σ²)  (normal samples)")
        gum_axes.axhline((1 - fit.pi) * fit.c, ls=":", color="#9467bd", label="(1 − π)·c  (damaged)")
        gum_axes.set_title("entropy statistic with the dataset-wide GUM")
    else:
        gum_axes.set_title("entropy statistic (GUM fitted per batch: no single fit to overlay)")
    gum_axes.set_xlabel("standardised, sign-alternated entropy (GUM input)")
    gum_axes.set_ylabel("density")
    gum_axes.legend(fontsize=7, loc="upper right")
    return write_figure(figure, path, dpi=110)


def typical_members(
    labels: np.ndarray, p_true: np.ndarray, classes: np.ndarray, count: int, exclude: np.ndarray
) -> list[np.ndarray]:
    """For each class, up to `count` of its images with the highest p_gt (skipping `exclude`)."""
    order = np.lexsort((-p_true, labels))
    sorted_labels = labels[order]
    members = []
    for cls, skip in zip(classes, exclude, strict=True):
        lo, hi = np.searchsorted(sorted_labels, [cls, cls + 1])
        chosen = order[lo:hi]
        members.append(chosen[chosen != skip][:count])
    return members


def _show(axes: Any, image: np.ndarray, title: str, color: str) -> None:
    axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_color(color)
        spine.set_linewidth(3)
    axes.set_title(title, fontsize=7, color=color)


def plot_gallery(
    table: HardnessTable, dataset: FaceDataset, path: Path, *, top: int = 16, typical: int = 3
) -> Path:
    """Rows: a top-`top` image | `typical` images of its label | of its predicted identity.

    When the model predicts the labelled identity, the right group shows the runner-up instead.
    """
    flagged = table.ranking()[:top]
    predicted = table.predicted[flagged]
    other = np.where(predicted == table.labels[flagged], table.runner_up[flagged], predicted)
    labelled_members = typical_members(table.labels, table.p_true, table.labels[flagged], typical, flagged)
    other_members = typical_members(table.labels, table.p_true, other, typical, flagged)

    columns = 1 + 2 * typical
    figure = Figure(figsize=(1.5 * columns, 1.75 * max(len(flagged), 1) + 0.4), layout="constrained")
    grid = np.atleast_2d(figure.subplots(max(len(flagged), 1), columns, squeeze=False))
    for axes in grid.flat:
        axes.axis("off")
    for row, index in enumerate(flagged):
        label = int(table.labels[index])
        guess = int(table.predicted[index])
        cell = grid[row, 0]
        cell.axis("on")
        _show(cell, dataset[int(index)][0],
              f"#{row + 1} idx {index}  SDS {table.sds[index]:.3f}\n"
              f"label {label} p={table.p_true[index]:.2g} → pred {guess}", FLAGGED_COLOR)
        is_runner_up = guess == label
        groups = (
            (labelled_members[row], f"label {label}", LABELLED_COLOR),
            (other_members[row], f"{'runner-up' if is_runner_up else 'pred'} {int(other[row])}",
             PREDICTED_COLOR),
        )
        for group, (members, caption, color) in enumerate(groups):
            for k, member in enumerate(members):
                cell = grid[row, 1 + group * typical + k]
                cell.axis("on")
                _show(cell, dataset[int(member)][0], f"{caption}\np_gt={table.p_true[member]:.2g}",
                      color)
    figure.suptitle("flagged (red) | typical of its label (blue) | typical of its prediction (green)",
                    fontsize=9)
    return write_figure(figure, path, dpi=100)
