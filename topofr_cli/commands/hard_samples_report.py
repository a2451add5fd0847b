"""What `topofr hard-samples` leaves in its output folder: the ranking, two figures and summary.json.

The files are staged and moved in one by one (`table_io.staged_directory`), so an interrupted run
leaves the previous report as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the CLI reads the names below at start-up; pyarrow and torch load on use
    from topofr_cli.data.dataset import FaceDataset
    from topofr_cli.hardness.ranking import HardnessTable

DISTRIBUTIONS = "distributions"  # figure names; the suffix is the figure format's
GALLERY = "gallery"
GALLERY_MAX_ROWS = 32  # a taller figure is no longer something a person looks at
SUMMARY_JSON = "summary.json"


def summary(table: HardnessTable, provenance: dict[str, Any], data_path: Path) -> dict[str, Any]:
    """Which model and how (`artifacts.outputs.provenance`), where p_gt came from (mode, temperature),
    the dataset-wide GUM fit, the collapse check and a few figures of the ranking (summary.json)."""
    fit = table.gum
    return {
        **provenance,
        "data": str(data_path),
        "num_images": len(table),
        "mode": table.mode,
        "temperature": table.temperature,
        "mean_cosine": table.mean_cosine,
        "degenerate": table.degenerate,
        "gum_scope": table.gum_scope,
        "gum": None
        if fit is None
        else {"pi": fit.pi, "sigma2": fit.sigma2, "c": fit.c, "iterations": fit.iterations},
        "misclassified": int(np.sum(table.predicted != table.labels)),
        "sds_mean": float(np.mean(table.sds)),
        "sds_max": float(np.max(table.sds)),
    }


def write_report(
    table: HardnessTable,
    dataset: FaceDataset,
    out: Path,
    *,
    provenance: dict[str, Any],
    data_path: Path,
    top: int,
    typical: int,
    figure_format: str = "png",
) -> Path:
    """Write sds.parquet, sds.csv, the two figures and summary.json into `out` (each replaces its
    namesake; other files stay); the gallery shows at most `GALLERY_MAX_ROWS` of the `top` highest-SDS
    images, each beside `typical` images of its identity."""
    from topofr_cli.artifacts.atomic import write_json
    from topofr_cli.hardness.table_io import staged_directory, write_table
    from topofr_cli.plots.hardness import plot_distributions, plot_gallery
    from topofr_cli.plots.style import FigureMeta, model_label

    meta = FigureMeta(
        model=model_label(Path(provenance["model"])),
        step=provenance["step"],
        dataset=Path(data_path).name,
        n=len(table),
        n_label="images",
    )
    shown = min(top, GALLERY_MAX_ROWS)
    with staged_directory(out) as staging:
        write_table(table, dataset, staging)
        plot_distributions(table, meta, staging / DISTRIBUTIONS, top=shown, figure_format=figure_format)
        plot_gallery(
            table, dataset, meta, staging / GALLERY, top=shown, typical=typical, figure_format=figure_format
        )
        write_json(staging / SUMMARY_JSON, summary(table, provenance, data_path))
    return out
