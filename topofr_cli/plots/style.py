"""One look for every figure: fonts, sizes, colours, what a title says, and how a figure is written.

Every figure says what it shows without the text around it, so titles carry the model, the training
step, the dataset, the sample size and the seed (`FigureMeta`), and file names carry the step.
Figures are `matplotlib.figure.Figure` objects (no pyplot state), built by `draw_*` functions and
written by `save_figure`, so tests can inspect them before they become pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from topofr_cli.artifacts.atomic import write_figure
from topofr_cli.artifacts.outputs import model_label  # noqa: F401 - titles name models by it
from topofr_cli.errors import TopofrError

FIGURE_FORMATS = ("png", "pdf", "svg")
MAX_PIXELS = 1600  # longest side of a PNG: readable on a screen, small enough for a README
DPI = 130

# Colour-blind-safe (Okabe–Ito) palette; runs and spaces cycle through it in this order.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
DIM_COLORS = {0: "#0072B2", 1: "#D55E00", 2: "#009E73"}
MUTED = "#9a9a9a"
DIAGONAL = "#7f7f7f"

RC = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",  # text stays text in SVG (editable, searchable)
    "pdf.fonttype": 42,
}


@dataclass(frozen=True)
class FigureMeta:
    """What a figure was made from; every field is optional and shown only when known."""

    model: str | None = None
    step: int | None = None
    dataset: str | None = None
    n: int | None = None
    n_label: str = "samples"
    seed: int | None = None

    def subject(self) -> str:
        """'model, step 92' (or whichever parts are known)."""
        parts = [self.model] if self.model else []
        if self.step is not None:
            parts.append(f"step {self.step}")
        return ", ".join(parts)

    def provenance(self) -> str:
        """'dataset, 512 samples, seed 0' (or whichever parts are known)."""
        parts = [self.dataset] if self.dataset else []
        if self.n is not None:
            parts.append(f"{self.n:,} {self.n_label}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def title(self, what: str) -> str:
        """'what — model, step N' on the first line, the provenance on the second."""
        subject = self.subject()
        first = f"{what} — {subject}" if subject else what
        provenance = self.provenance()
        return f"{first}\n{provenance}" if provenance else first

    def file_stem(self, name: str) -> str:
        """'model_step00000092_name' (parts known only); the step is zero-padded so files sort by it."""
        parts = [self.model] if self.model else []
        if self.step is not None:
            parts.append(f"step{self.step:08d}")
        return "_".join([*parts, name])


def check_format(figure_format: str) -> str:
    if figure_format not in FIGURE_FORMATS:
        raise TopofrError(f"--figure-format {figure_format}: expected one of {', '.join(FIGURE_FORMATS)}")
    return figure_format


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure in the house style (the style is applied while axes are created)."""
    with mpl.rc_context(RC):
        return Figure(figsize=(width, height), layout="constrained")


def styled(function):
    """Run a drawing function under the house rcParams (fonts and grid are read when artists are made)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC):
            return function(*args, **kwargs)

    return wrapper


def bounded_dpi(figure: Figure, max_pixels: int = MAX_PIXELS, dpi: int = DPI) -> float:
    """The dpi at which the figure's longer side is at most `max_pixels`."""
    return min(float(dpi), max_pixels / max(figure.get_size_inches()))


def save_figure(figure: Figure, path: str | Path, figure_format: str = "png") -> Path:
    """Write `figure` to `path` with the format's suffix, atomically (never half-written).

    PNGs are bounded to MAX_PIXELS on the longer side; PDF and SVG are vector (no bound needed).
    """
    check_format(figure_format)
    path = Path(path).with_suffix(f".{figure_format}")
    with mpl.rc_context(RC):
        return write_figure(figure, path, dpi=bounded_dpi(figure))
