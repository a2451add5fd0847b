"""Write an analysis to its output directory: diagrams.parquet, distances.csv, summary.json and PNGs.

Everything is written into a temporary sibling directory that replaces the output directory only
once complete. An existing output directory is replaced only if it is empty or an earlier analysis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from topofr_cli import __version__
from topofr_cli.analysis.collapse import CURVE_COLUMNS, curve_rows
from topofr_cli.analysis.pipeline import AnalysisResult, ModelPoint
from topofr_cli.analysis.spaces import INPUT_SPACE, LATENT_L2_SPACE, LATENT_SPACE
from topofr_cli.artifacts.atomic import StagedDir, write_json
from topofr_cli.artifacts.outputs import OutputPolicy, check_output, command_line, write_marker
from topofr_cli.plots.collapse import plot_collapse_curves
from topofr_cli.plots.diagrams import plot_barcodes, plot_death_histograms, plot_persistence_diagrams
from topofr_cli.plots.pca import pca_from_distances, pca_from_points, plot_sample_pca
from topofr_cli.plots.style import FigureMeta
from topofr_cli.topology.diagrams import WASSERSTEIN_DELTA

SUMMARY_FORMAT = "topofr-topology-analysis"
SUMMARY_FILE = "summary.json"
CONVENTIONS = {
    "input": "A^X = pairwise L2 distance of the [-1, 1] images / sqrt(4 * 3 * H * W)",
    "latent": "A^Z = pairwise L2 distance of the embeddings before L2 normalisation / latent_scale (§1.2)",
    "latent_l2": "pairwise L2 distance of the L2-normalised embeddings",
    "h0": "births 0, deaths = minimum-spanning-tree edge lengths; the essential class (0, inf) is left out "
    "of every diagram: it is the same point in all spaces, so no distance changes",
    "h1": "gudhi Vietoris-Rips persistence (edge collapse, expansion to triangles); no essential classes",
    "diagram_distances": f"gudhi.bottleneck_distance; gudhi.hera.wasserstein_distance with internal_p = inf "
    f"and relative error delta = {WASSERSTEIN_DELTA}",
    "ptsa": "official / symmetric PTSA loss forms of §1.2, divided by the sample size",
}


def diagram_frame(result: AnalysisResult) -> pd.DataFrame:
    """Columns model, step, space, dim, birth, death; the input space has model and step null."""
    parts = []

    def add(model: str | None, step: int | None, space: str, diagrams: dict[int, np.ndarray]) -> None:
        for dim, diagram in diagrams.items():
            parts.append(
                pd.DataFrame(
                    {
                        "model": pd.Series([model] * len(diagram), dtype="string"),
                        "step": pd.Series([step] * len(diagram), dtype="Int64"),
                        "space": pd.Series([space] * len(diagram), dtype="string"),
                        "dim": np.full(len(diagram), dim, dtype=np.int64),
                        "birth": diagram[:, 0],
                        "death": diagram[:, 1],
                    }
                )
            )

    add(None, None, INPUT_SPACE, result.input.diagrams)
    for target in result.targets:
        for point in target.points:
            for space, topology in point.topologies.items():
                add(target.label, point.step, space, topology.diagrams)
    return pd.concat(parts, ignore_index=True)


def _point_summary(point: ModelPoint) -> dict[str, Any]:
    spaces = {}
    for space, comparison in point.comparisons.items():
        topology = point.topologies[space]
        spaces[space] = {
            "pairs": {str(dim): len(d) for dim, d in topology.diagrams.items()},
            **comparison.as_dict(),
            "seconds": topology.seconds,
        }
    verification = point.verification
    return {
        "path": str(point.path),
        "step": point.step,
        "latent_scale": point.latent_scale,
        "embedding_size": point.embedding_size,
        "spaces": spaces,
        "mean_cosine": point.mean_cosine,
        "degenerate": point.degenerate,
        "verification": None
        if verification is None
        else {
            "bin": verification.bin_name,
            "accuracy": verification.accuracy,
            "accuracy_std": verification.accuracy_std,
        },
        "seconds": point.seconds,
    }


def summary(result: AnalysisResult) -> dict[str, Any]:
    sample = result.sample
    return {
        "format": SUMMARY_FORMAT,
        "topofr_version": __version__,
        "command": command_line(),
        "dataset": str(sample.dataset),
        "samples": len(sample.indices),
        "identities": int(len(np.unique(sample.labels))),
        "per_identity": result.per_identity,
        "seed": result.seed,
        "dims": list(result.dims),
        "image_size": list(sample.images.shape[2:]),
        "sample_indices": sample.indices.tolist(),
        "conventions": CONVENTIONS,
        "input": {
            "pairs": {str(dim): len(d) for dim, d in result.input.diagrams.items()},
            "seconds": result.input.seconds,
        },
        "targets": [
            {
                "label": t.label,
                "path": str(t.path),
                "kind": "run" if t.is_run else "model",
                "points": [_point_summary(p) for p in t.points],
            }
            for t in result.targets
        ],
        "seconds": result.seconds,
    }


def _views(result: AnalysisResult, point: ModelPoint | None) -> dict[str, dict[int, np.ndarray]]:
    views = {INPUT_SPACE: result.input.diagrams}
    if point is not None:
        views.update({space: point.topologies[space].diagrams for space in (LATENT_SPACE, LATENT_L2_SPACE)})
    return views


def _write_point_figures(
    result: AnalysisResult, meta: FigureMeta, point: ModelPoint | None, folder: Path, figure_format: str
) -> list[str]:
    """Diagrams, barcodes and death times of the input and (with a point) both latent spaces, and a PCA view."""
    views = _views(result, point)
    paths = [
        plot_persistence_diagrams(
            views, meta, folder / meta.file_stem("persistence_diagrams"), figure_format=figure_format
        ),
        plot_barcodes(views, meta, folder / meta.file_stem("barcodes"), figure_format=figure_format),
        plot_death_histograms(
            views, meta, folder / meta.file_stem("death_histograms"), figure_format=figure_format
        ),
    ]
    if point is None:
        projected, share = pca_from_distances(result.input.distances.numpy())
        paths.append(
            plot_sample_pca(
                projected,
                share,
                result.sample.labels,
                meta,
                "input space (pixels), PCA",
                folder / meta.file_stem("input_pca"),
                figure_format=figure_format,
            )
        )
    else:
        projected, share = pca_from_points(point.embeddings_l2)
        paths.append(
            plot_sample_pca(
                projected,
                share,
                result.sample.labels,
                meta,
                "L2-normalised embeddings, PCA",
                folder / meta.file_stem("latent_pca"),
                figure_format=figure_format,
            )
        )
    return [path.name for path in paths]


def _write_figures(result: AnalysisResult, folder: Path, figure_format: str = "png") -> list[str]:
    sample = result.sample
    base = FigureMeta(dataset=sample.dataset.name, n=len(sample.indices), seed=result.seed)
    if not result.targets:
        return _write_point_figures(result, base, None, folder, figure_format)
    written: list[str] = []
    for target in result.targets:
        # A run is pictured at its last checkpoint, and at step 0 too when the run saved its initial model.
        points = [target.points[-1]]
        if target.is_run and len(target.points) > 1 and target.points[0].step == 0:
            points.insert(0, target.points[0])
        for point in points:
            meta = replace(base, model=target.label, step=point.step)
            written += _write_point_figures(result, meta, point, folder, figure_format)
    runs = [t for t in result.targets if t.is_run]
    if runs:
        rows = curve_rows(runs)
        # λ rescales the raw latent space, so runs with different λ also differ there by scale alone;
        # the L2-normalised space compares their shapes only.
        for space, name in ((LATENT_SPACE, "collapse_curve"), (LATENT_L2_SPACE, "collapse_curve_l2")):
            written.append(
                plot_collapse_curves(rows, base, folder / name, space=space, figure_format=figure_format).name
            )
    return written


def _is_earlier_analysis(out_dir: Path) -> bool:
    try:
        return json.loads((out_dir / SUMMARY_FILE).read_text()).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# An analysis folder is replaced whole: with --overwrite, and only if it is an earlier analysis.
OUTPUT_POLICY = OutputPolicy(
    "dir",
    "replace_own",
    is_own=_is_earlier_analysis,
    refused="{path}: holds an earlier analysis (pass --overwrite to replace it or choose another --out)",
    foreign=f"{{path}}: exists and is not an earlier analysis (no {SUMMARY_FILE}); choose another --out",
)


def check_output_dir(out_dir: Path, *, overwrite: bool = False, inputs: Iterable[Path | None] = ()) -> None:
    """Raise unless `out_dir` is absent, empty, or (with `overwrite`) an earlier analysis, which is
    replaced; never one of the `inputs`, a folder holding one or inside one."""
    check_output(out_dir, OUTPUT_POLICY, overwrite=overwrite, inputs=inputs)


def write_outputs(
    result: AnalysisResult,
    out_dir: str | Path,
    *,
    figure_format: str = "png",
    overwrite: bool = False,
    inputs: Iterable[Path | None] = (),
) -> dict[str, Any]:
    """Write every output; returns the summary (with the list of files) that went to summary.json."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)
    with StagedDir(out_dir) as tmp:
        write_marker(tmp, "analyze-topology")
        diagram_frame(result).to_parquet(tmp / "diagrams.parquet", index=False)
        files = ["diagrams.parquet"]
        if result.targets:
            pd.DataFrame(curve_rows(result.targets), columns=list(CURVE_COLUMNS)).to_csv(
                tmp / "distances.csv", index=False
            )
            files.append("distances.csv")
        files += _write_figures(result, tmp, figure_format)
        data = summary(result)
        data["files"] = [*files, SUMMARY_FILE]
        write_json(tmp / SUMMARY_FILE, data)
    return data
