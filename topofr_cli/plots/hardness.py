"""Figures for `topofr hard-samples`: what the structure damage score is made of, and a gallery.

SDS = w1 · w2 with w1 = (2 − γ)^t from the GUM posterior γ and w2 = 1 − p_gt (docs/method.md §1.3).
The GUM is fitted to the reference implementation's statistic: the per-image entropy with its sign flipped at every even
position, then standardised. The flip turns one entropy distribution into two mirror-image modes at
±(mean entropy)/std, which the zero-mean Gaussian of the mixture sits between; the mixture weight π
of that Gaussian is capped at 0.5 (as in the reference implementation). The distributions figure shows both facts, so a
reader does not mistake the fit for a failed one, and the SDS–p_gt scatter shows which of the two
factors ranks an image.

The gallery puts each flagged image beside the most typical images of its labelled identity and of
the identity the model predicts, so a person can tell a mislabel from a hard image at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator

from topofr_cli.data.dataset import FaceDataset
from topofr_cli.hardness.gum import PI_CAP
from topofr_cli.hardness.ranking import HardnessTable
from topofr_cli.plots.style import FigureMeta, new_figure, save_figure, styled

FLAGGED_COLOR = "#d62728"
LABELLED_COLOR = "#0072B2"
PREDICTED_COLOR = "#009E73"
NEGATED_COLOR = "#E69F00"
KEPT_COLOR = "#56B4E9"
KEY_CHARS = 18  # longer source keys keep their tail (the file name); wider captions overrun the image


def gum_density(x: np.ndarray, pi: float, sigma2: float, c: float) -> np.ndarray:
    """π·N(x; 0, σ²) + (1 − π)·c, the mixture the SDE fits (docs/method.md §1.3)."""
    gaussian = np.exp(-0.5 * x**2 / sigma2) / np.sqrt(2.0 * np.pi * sigma2)
    return pi * gaussian + (1.0 - pi) * c


def _plain_log_ticks(axis) -> None:
    """Decades labelled as plain numbers (1, 10, 100, …), no minor labels."""
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _sds_histogram(axes, table: HardnessTable) -> None:
    axes.hist(table.sds, bins=60, color="#7f7f7f")
    axes.set_yscale("log")
    _plain_log_ticks(axes.yaxis)
    axes.set_xlabel("structure damage score  SDS = w1 · w2")
    axes.set_ylabel("images (log scale)")
    axes.set_title(f"SDS over {len(table):,} images")


def _gum_panel(axes, table: HardnessTable) -> None:
    statistic = np.asarray(table.gum_input)
    negated = np.arange(len(statistic)) % 2 == 0
    bins = np.linspace(statistic.min(), statistic.max(), 81) if len(statistic) else 10
    axes.hist(
        [statistic[negated], statistic[~negated]],
        bins=bins,
        density=False,
        stacked=True,
        color=[NEGATED_COLOR, KEPT_COLOR],
        label=["entropy negated (even positions)", "entropy kept (odd positions)"],
    )
    axes.set_xlabel("GUM input: ±entropy, standardised (sign flipped at even positions)")
    axes.set_ylabel("images")
    if table.gum is None:
        axes.set_title("GUM input (mixture fitted per batch: no single fit to overlay)")
        axes.legend(loc="upper right")
        return
    fit = table.gum
    width = float(bins[1] - bins[0])
    grid = np.linspace(statistic.min(), statistic.max(), 400)
    scale = len(statistic) * width  # density → expected images per bin
    capped = " — at its cap" if fit.pi >= PI_CAP - 1e-9 else f" (cap {PI_CAP})"
    axes.plot(
        grid,
        scale * gum_density(grid, fit.pi, fit.sigma2, fit.c),
        color="black",
        lw=1.4,
        label=f"fitted mixture: π = {fit.pi:.3f}{capped}",
    )
    axes.plot(
        grid,
        scale * fit.pi * gum_density(grid, 1.0, fit.sigma2, 0.0),
        "--",
        color="#555555",
        lw=1,
        label=f"π·N(0, σ² = {fit.sigma2:.2f}): 'normal' images",
    )
    axes.axhline(
        scale * (1 - fit.pi) * fit.c,
        ls=":",
        color=FLAGGED_COLOR,
        lw=1.2,
        label=f"(1 − π)·uniform (c = {fit.c:.3f}): 'damaged'",
    )
    axes.set_title(
        "the statistic the GUM is fitted to, and the fit\n"
        f"the sign flip makes two mirror-image modes; the Gaussian sits at 0 between them; π ≤ {PI_CAP}"
    )
    axes.legend(loc="upper right", fontsize=7)


def _sds_scatter(axes, table: HardnessTable, flagged: np.ndarray) -> None:
    p_true = np.clip(np.asarray(table.p_true, dtype=np.float64), 1e-12, 1.0)
    points = axes.scatter(
        p_true, table.sds, c=table.gamma, cmap="viridis", vmin=0, vmax=1, s=6, lw=0, alpha=0.8
    )
    axes.scatter(
        p_true[flagged],
        table.sds[flagged],
        s=40,
        facecolors="none",
        edgecolors=FLAGGED_COLOR,
        lw=1.2,
        label=f"top {len(flagged)} by SDS",
    )
    grid = np.logspace(np.log10(p_true.min()), 0, 200)
    axes.plot(grid, 1 - grid, color="black", lw=0.8, ls="--", label="SDS = 1 − p_gt (γ = 1, w1 = 1)")
    axes.set_xscale("log")
    axes.set_xlabel("p_gt: probability of the labelled identity (log scale)")
    axes.set_ylabel("SDS")
    axes.set_title("per image: SDS against p_gt, coloured by γ")
    axes.legend(loc="lower left", fontsize=7)
    axes.figure.colorbar(points, ax=axes, label="γ (GUM posterior of 'normal')")


@styled
def draw_distributions(table: HardnessTable, meta: FigureMeta, *, top: int = 20):
    """SDS histogram | the GUM statistic with the fit | SDS against p_gt."""
    figure = new_figure(16.0, 4.8)
    sds_axes, gum_axes, scatter_axes = figure.subplots(1, 3)
    _sds_histogram(sds_axes, table)
    _gum_panel(gum_axes, table)
    _sds_scatter(scatter_axes, table, table.ranking()[:top])
    scope = "one GUM over the dataset" if table.gum is not None else "GUM fitted per batch"
    figure.suptitle(meta.title(f"structure damage scores ({scope})"))
    return figure


def plot_distributions(
    table: HardnessTable, meta: FigureMeta, path: Path, *, top: int = 20, figure_format: str = "png"
) -> Path:
    return save_figure(draw_distributions(table, meta, top=top), path, figure_format)


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


def short_key(key: str, limit: int = KEY_CHARS) -> str:
    return key if len(key) <= limit else "…" + key[-(limit - 1) :]


def _show(axes: Any, image: np.ndarray, caption: str, color: str) -> None:
    axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.grid(False)
    for spine in axes.spines.values():
        spine.set_visible(True)
        spine.set_color(color)
        spine.set_linewidth(2.5)
    axes.set_title(caption, fontsize=6.5, color=color, pad=2)


def _group_cells(figure: Any, count: int, per_row: int, columns: int):
    """Axes [count][columns]: groups of `columns` images, `per_row` groups side by side."""
    rows = -(-count // per_row)
    ratios = ([1.0] * columns + [0.25]) * per_row
    grid = figure.add_gridspec(max(rows, 1), len(ratios) - 1, width_ratios=ratios[:-1])
    cells = []
    for k in range(count):
        row, group = divmod(k, per_row)
        start = group * (columns + 1)
        cells.append([figure.add_subplot(grid[row, start + c]) for c in range(columns)])
    return cells


@styled
def draw_gallery(
    table: HardnessTable, dataset: FaceDataset, meta: FigureMeta, *, top: int = 16, typical: int = 3
):
    """Per flagged image: it (red), `typical` images of its label (blue), of its prediction (green).

    When the model predicts the labelled identity, the green group shows the runner-up instead.
    Captions give the source key (the file the image came from) and the numbers that rank it.
    """
    flagged = table.ranking()[:top]
    predicted = table.predicted[flagged]
    other = np.where(predicted == table.labels[flagged], table.runner_up[flagged], predicted)
    labelled_members = typical_members(table.labels, table.p_true, table.labels[flagged], typical, flagged)
    other_members = typical_members(table.labels, table.p_true, other, typical, flagged)
    columns = 1 + 2 * typical
    per_row = 1 if len(flagged) <= 4 else 2
    rows = max(-(-len(flagged) // per_row), 1)
    figure = new_figure(per_row * columns * 1.15 + 0.3 * (per_row - 1), rows * 1.5 + 0.7)
    cells = _group_cells(figure, len(flagged), per_row, columns)
    for rank, (index, row_cells) in enumerate(zip(flagged, cells, strict=True), start=1):
        label, guess = int(table.labels[index]), int(table.predicted[index])
        _show(
            row_cells[0],
            dataset[int(index)][0],
            f"#{rank} {short_key(dataset.source_key(int(index)))}\nSDS {table.sds[index]:.3f} γ {table.gamma[index]:.2f}\n"
            f"label {label} → pred {guess}",
            FLAGGED_COLOR,
        )
        caption = "runner-up" if guess == label else "pred"
        groups = (
            (labelled_members[rank - 1], f"label {label}", LABELLED_COLOR),
            (other_members[rank - 1], f"{caption} {int(other[rank - 1])}", PREDICTED_COLOR),
        )
        for group, (members, title, color) in enumerate(groups):
            for k in range(typical):
                axes = row_cells[1 + group * typical + k]
                if k >= len(members):
                    axes.axis("off")
                    continue
                member = int(members[k])
                _show(
                    axes,
                    dataset[member][0],
                    f"{title}\n{short_key(dataset.source_key(member), 15)}\nΔcos {table.cosine_gap[member]:.2f}",
                    color,
                )
    figure.suptitle(
        meta.title(f"top {len(flagged)} images by structure damage score")
        + "\nflagged image (red) | typical images of its label (blue) | of its prediction, or runner-up "
        "when the prediction is right (green);  Δcos = cos(predicted) − cos(runner-up)"
    )
    return figure


def plot_gallery(
    table: HardnessTable,
    dataset: FaceDataset,
    meta: FigureMeta,
    path: Path,
    *,
    top: int = 16,
    typical: int = 3,
    figure_format: str = "png",
) -> Path:
    return save_figure(draw_gallery(table, dataset, meta, top=top, typical=typical), path, figure_format)
