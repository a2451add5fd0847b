"""ROC figures for `topofr eval`: verification sets on linear axes, IJB on a log FAR axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from topofr_cli.artifacts.atomic import write_figure


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str,
    log_far: bool = False, far_marks: dict[str, dict[float, float]] | None = None,
) -> Path:
    """One ROC curve (FAR on x, TAR on y) per name; `far_marks[name]` = {FAR: TAR} points to mark."""
    figure = Figure(figsize=(6.0, 5.0))
    axes = figure.add_subplot()
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        if log_far:  # FAR = 0 has no place on a log axis
            keep = fpr > 0
            fpr, tpr = fpr[keep], tpr[keep]
        order = np.argsort(fpr, kind="stable")
        (line,) = axes.plot(fpr[order], tpr[order], label=name, linewidth=1.5)
        for far, tar in ((far_marks or {}).get(name) or {}).items():
            axes.plot([far], [tar], marker="o", color=line.get_color(), markersize=4)
    if log_far:
        axes.set_xscale("log")
        axes.set_xlim(1e-6, 1.0)
    else:
        axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate (FAR)")
    axes.set_ylabel("true accept rate (TAR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    return write_figure(figure, path, dpi=120, tight=True)
