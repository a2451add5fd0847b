"""ROC figures for `topofr eval`: verification sets and IJB 1:1, both on a log FAR axis.

Face verification is read at small false accept rates, so the FAR axis is logarithmic and the curve
is the exact one (one point per distinct score, `ijb_protocol.roc_curve`), not the 400-threshold
grid of the accuracy protocol, which is coarse exactly where the log axis looks. A FAR below
1 / (number of impostor pairs) cannot be measured; the axis starts there and the legend says so.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import numpy as np

from topofr_cli.evaluation.ijb_protocol import roc_curve
from topofr_cli.plots.style import PALETTE, FigureMeta, new_figure, save_figure, styled

FAR_MARKS = (1e-4, 1e-3)


@dataclass
class RocCurve:
    """One curve of a ROC figure: exact (fpr, tpr), its negatives count and the numbers for the legend."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    negatives: int
    auc: float
    accuracy: tuple[float, float] | None = None  # (mean, std) of the 10-fold protocol
    _: KW_ONLY  # at most six fields by position
    tar_at_far: dict[float, float] | None = None  # measured elsewhere (IJB); else read off the curve


def exact_verification_roc(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) over every threshold of squared pair distances (a pair is accepted below it)."""
    return roc_curve(np.asarray(issame, dtype=bool), -np.asarray(distances, dtype=np.float64))[:2]


def tar_at_far_on_curve(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """The best TAR among thresholds whose FAR does not exceed `far` (the operating point)."""
    allowed = fpr <= far
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def _marks(curve: RocCurve) -> dict[float, float]:
    floor = 1.0 / max(curve.negatives, 1)
    if curve.tar_at_far is not None:
        return {far: tar for far, tar in curve.tar_at_far.items() if far in FAR_MARKS and far >= floor}
    return {far: tar_at_far_on_curve(curve.fpr, curve.tpr, far) for far in FAR_MARKS if far >= floor}


def _label(curve: RocCurve, marks: dict[float, float]) -> str:
    parts = [curve.name]
    if curve.accuracy is not None:
        parts.append(f"acc {100 * curve.accuracy[0]:.2f} ± {100 * curve.accuracy[1]:.2f} %")
    parts.append(f"AUC {curve.auc:.4f}")
    text = ", ".join(parts)
    for far, tar in marks.items():
        text += f"\nTAR@FAR={far:.0e}: {100 * tar:.2f} %"
    unmeasured = [far for far in FAR_MARKS if far not in marks]
    if unmeasured:
        fars = ", ".join(f"{far:.0e}" for far in unmeasured)
        text += f"\nTAR@FAR={fars}: not measurable ({curve.negatives:,} impostor pairs)"
    return text


@styled
def draw_roc(curves: list[RocCurve], meta: FigureMeta, what: str):
    """ROC figure: FAR (log) on x, TAR on y; markers at FAR 1e-4 and 1e-3 where measurable."""
    figure = new_figure(6.4, 5.0)
    axes = figure.add_subplot()
    lowest = min(1.0 / max(c.negatives, 1) for c in curves)
    bottom = 1.0
    for color, curve in zip(PALETTE, curves, strict=False):
        fpr, tpr = np.asarray(curve.fpr), np.asarray(curve.tpr)
        keep = fpr > 0  # FAR = 0 has no place on a log axis
        marks = _marks(curve)
        # The exact curve keeps every corner, so straight lines between its points are the ROC itself.
        axes.plot(fpr[keep], tpr[keep], color=color, lw=1.6, label=_label(curve, marks))
        if keep.any():
            bottom = min(bottom, float(tpr[keep].min()))
        for far, tar in marks.items():
            axes.plot([far], [tar], "o", color=color, ms=5, mec="white", mew=0.8)
    for far in FAR_MARKS:
        axes.axvline(far, color="#bbbbbb", lw=0.8, ls=":")
    axes.set_xscale("log")
    left = min(lowest, FAR_MARKS[0]) * 0.8
    axes.set_xlim(left, 1.0)
    if lowest > left / 0.8:  # no curve reaches the left end: say why that part is empty
        axes.axvspan(left, lowest, color="#f2f2f2", lw=0, zorder=0)
        axes.text(
            (left * lowest) ** 0.5,
            0.5,
            f"FAR < 1/{round(1 / lowest):,}:\nnot measurable\nwith these pairs",
            ha="center",
            va="center",
            fontsize=8,
            color="#777777",
            transform=axes.get_xaxis_transform(),
        )
    # Start the TAR axis at the decile below the lowest drawn point: the curve fills the panel.
    axes.set_ylim(max(0.0, np.floor(10 * bottom - 1e-9) / 10), 1.005)
    axes.set_xlabel("false accept rate (FAR, log scale)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(meta.title(what))
    axes.grid(True, which="major", alpha=0.35)
    axes.grid(True, which="minor", alpha=0.1)
    axes.legend(loc="lower right", frameon=True)
    return figure


def plot_roc(
    curves: list[RocCurve],
    meta: FigureMeta,
    path: str | Path,
    *,
    what: str = "ROC",
    figure_format: str = "png",
) -> Path:
    """Draw and write a ROC figure; returns the written path (suffix = format)."""
    return save_figure(draw_roc(curves, meta, what), path, figure_format)
