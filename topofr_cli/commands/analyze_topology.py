"""`topofr analyze-topology` as one call: persistence diagrams of a dataset sample in input and latent
space, their distances, and the structure collapse curve of a training run.

    import topofr_cli as tf
    result = tf.analyze_topology("data/synthetic", ["runs/quickstart"], samples=256, out="topology")
    result.analysis.targets[0].points[-1].comparisons["latent"].distances[0].wasserstein_1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.outputs import CHECKPOINT_FOLDER, default_output
from topofr_cli.commands.common import claims
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, stage

if TYPE_CHECKING:
    from topofr_cli.analysis.pipeline import AnalysisResult


@dataclass
class TopologyResult:
    """The analysis (`analysis.AnalysisResult`: sample, diagrams, per-model points), the output folder,
    and `summary` (summary.json's content, with the list of files written); `to_json()` is `--json`."""

    analysis: AnalysisResult
    out: Path
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.summary, "out": self.out}


def _read_inputs(data: Path, models: Sequence[Path]) -> list[Path]:
    """What the analysis reads: the dataset, each model file, each run's checkpoints folder."""
    return [data, *(model / CHECKPOINT_FOLDER if model.is_dir() else model for model in models)]


def analyze_topology(
    data: str | Path,
    models: Sequence[str | Path] = (),
    *,
    samples: int = 512,
    per_identity: int | None = None,
    dims: str | Sequence[int] = (0, 1),
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 128,
    device: str = "auto",
    figure_format: str = "png",
    progress: Progress | bool | None = None,
) -> TopologyResult:
    """Analyse a sample of `data` alone (no `models`) or with each model file / run folder in `models`,
    and write diagrams.parquet, distances.csv, summary.json and figures to `out` (default: beside the
    run, else `topofr-analyze-topology/<name>/`)."""
    from topofr_cli.analysis.pipeline import analyze
    from topofr_cli.analysis.spaces import parse_dims
    from topofr_cli.commands.analysis_report import check_output_dir, write_outputs
    from topofr_cli.devices import resolve_device
    from topofr_cli.plots.style import check_format

    progress = resolve_progress(progress)
    data, models = Path(data), [Path(model) for model in models]
    check_format(figure_format)
    dimensions = parse_dims(dims) if isinstance(dims, str) else list(dims)
    torch_device = resolve_device(device)
    out = (
        Path(out)
        if out is not None
        else default_output("analyze-topology", models[0] if len(models) == 1 else data)
    )
    inputs = _read_inputs(data, models)
    check_output_dir(out, overwrite=overwrite, inputs=inputs)  # before minutes of work, not after
    with claims([out]):
        check_output_dir(out, overwrite=overwrite, inputs=inputs)
        analysis = analyze(
            data,
            models,
            samples=samples,
            per_identity=per_identity,
            dims=dimensions,
            seed=seed,
            batch_size=batch_size,
            device=torch_device,
            progress=progress,
        )
        with stage(progress, "writing outputs"):
            written = write_outputs(
                analysis, out, figure_format=figure_format, overwrite=overwrite, inputs=inputs
            )
    return TopologyResult(analysis, out, written)


def check_model_arguments(models: Sequence[Path], no_model: bool) -> None:
    """`--no-model` and model paths exclude each other; one of them is needed."""
    if no_model and models:
        raise TopofrError(f"--no-model: do not also name models ({models[0]})")
    if not no_model and not models:
        raise TopofrError(
            "name at least one MODEL_OR_RUN_DIR, or pass --no-model to analyse the dataset alone"
        )
