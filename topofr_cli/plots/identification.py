"""The 1:N identification figure: CMC (left) and TPIR against FPIR on a log axis (right), per gallery."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from topofr_cli.plots.style import PALETTE, FigureMeta, new_figure, save_figure, styled

if TYPE_CHECKING:  # plots draw results; they do not import the evaluation stack
    from topofr_cli.evaluation.ijb_identification import IdentificationResult


def _cmc_panel(axes, result: IdentificationResult) -> None:
    longest = 1
    for color, gallery in zip(PALETTE, result.galleries, strict=False):
        ranks = np.arange(1, len(gallery.cmc_curve) + 1)
        label = (
            f"{gallery.gallery}: rank-1 {100 * gallery.cmc[1]:.2f} %, rank-10 {100 * gallery.cmc[10]:.2f} %"
        )
        few = (
            len(ranks) <= 20
        )  # a gallery of a few templates: a step of one point draws nothing, mark the ranks
        marker = {"marker": "o", "ms": 4} if few else {}
        axes.step(ranks, gallery.cmc_curve, where="post", color=color, lw=1.6, label=label, **marker)
        longest = max(longest, len(ranks))
    axes.set_xscale("log")
    axes.set_xlim(0.9, max(longest, 10) * 1.1)  # ranks start at 1; an identification rate lies in [0, 1]
    axes.set_ylim(0.0, 1.005)
    axes.set_xlabel("rank (log scale)")
    axes.set_ylabel("identification rate (mated searches)")
    axes.set_title("CMC")
    axes.legend(loc="lower right", frameon=True)


def _det_panel(axes, result: IdentificationResult) -> None:
    lowest = 1.0
    for color, gallery in zip(PALETTE, result.galleries, strict=False):
        keep = gallery.fpir_curve > 0  # FPIR = 0 has no place on a log axis
        if keep.any():
            lowest = min(lowest, float(gallery.fpir_curve[keep].min()))
        style = "-" if result.rule == "exact" else "--o"
        axes.plot(gallery.fpir_curve[keep], gallery.tpir_curve[keep], style, color=color, lw=1.6)
        label = ", ".join(f"{f:.0e}: {100 * t:.2f} %" for f, t in gallery.tpir_at_fpir.items())
        marks = [(f, t) for f, t in gallery.tpir_at_fpir.items() if np.isfinite(gallery.thresholds[f])]
        axes.plot([f for f, _ in marks], [t for _, t in marks], "o", color=color, ms=5, mec="white", mew=0.8)
        axes.plot([], [], color=color, label=f"{gallery.gallery}: TPIR@FPIR {label}")
    for fpir in next(iter(result.galleries)).tpir_at_fpir:
        axes.axvline(fpir, color="#bbbbbb", lw=0.8, ls=":")
    axes.set_xscale("log")
    axes.set_xlim(min(lowest, 1e-3) * 0.8, 1.0)
    axes.set_ylim(0.0, 1.005)
    axes.set_xlabel("false positive identification rate (FPIR, log scale)")
    axes.set_ylabel("true positive identification rate (TPIR, rank 1)")
    rule = "open set, exact threshold" if result.rule == "exact" else "insightface's closed-set arithmetic"
    axes.set_title(f"TPIR vs FPIR ({rule})")
    axes.legend(loc="upper left", frameon=True, fontsize=7)


@styled
def draw_identification(result: IdentificationResult, meta: FigureMeta):
    figure = new_figure(11.0, 4.8)
    left, right = figure.subplots(1, 2)
    _cmc_panel(left, result)
    _det_panel(right, result)
    figure.suptitle(meta.title(f"{result.target} 1:N identification"))
    return figure


def plot_identification(
    result: IdentificationResult, meta: FigureMeta, path: str | Path, *, figure_format: str = "png"
) -> Path:
    """Draw and write the 1:N figure; returns the written path (suffix = format)."""
    return save_figure(draw_identification(result, meta), path, figure_format)
