"""`topofr eval` as one call: verification `.bin` files, IJB-B/C 1:1 and 1:N, dataset embeddings.

import topofr_cli as tf
result = tf.evaluate("runs/quickstart", out="eval-out")   # a run folder: its latest checkpoint
result.verification.results["synthetic_val"].accuracy_mean
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.outputs import FILE, REPORT, check_output, default_output, provenance
from topofr_cli.commands.common import claims, clamped_workers, is_fresh, mark, open_data, resolve_model
from topofr_cli.commands.eval_report import (
    VERIFICATION_CSV,
    EmbeddingsReport,
    IJBReport,
    VerificationReport,
    embeddings_report,
    ijb_report,
    ijb_tar_far_name,
    verification_report,
)
from topofr_cli.commands.identification_report import (
    IdentificationReport,
    identification,
    identification_csv_name,
    identification_summary,
)
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress

if TYPE_CHECKING:
    from topofr_cli.evaluation.model_io import LoadedModel
    from topofr_cli.plots.style import FigureMeta


@dataclass
class EvalResult:
    """What `evaluate` measured and wrote; `to_json()` is `topofr eval --json`'s object."""

    model: Path  # the model file evaluated (a run folder's latest checkpoint when a folder was named)
    kind: str
    network: str
    step: int | None
    embedding_size: int
    flip: bool
    provenance: dict[str, Any]
    out: Path | None = None  # the results folder (None when only embeddings were written)
    verification: VerificationReport | None = None
    ijb: IJBReport | None = None
    identification: IdentificationReport | None = None  # IJB 1:N
    embeddings: EmbeddingsReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "model": self.model,
            "kind": self.kind,
            "network": self.network,
            "step": self.step,
            "embedding_size": self.embedding_size,
            "flip": self.flip,
            "command": self.provenance["command"],
            "topofr_version": self.provenance["topofr_version"],
        }
        if self.verification is not None:
            summary["verification"] = {
                "sets": {name: r.summary() for name, r in self.verification.results.items()},
                "csv": self.verification.csv_path,
                "roc": self.verification.roc_path,
            }
        if self.ijb is not None:
            summary["ijb"] = _ijb_summary(self.ijb)
        if self.identification is not None:
            summary["ijb_1n"] = identification_summary(self.identification)
        if self.embeddings is not None:
            written = self.embeddings
            summary["embeddings"] = {
                "path": written.path,
                "count": written.count,
                "embedding_size": written.embedding_size,
            }
        return summary


def _ijb_summary(report: IJBReport) -> dict[str, Any]:
    result = report.result
    return {
        "target": report.target,
        "images": result.num_images,
        "templates": result.num_templates,
        "pairs": len(result.scores),
        "auc": result.auc,
        "tar_at_far": {f"{far:g}": tar for far, tar in result.tar_at_far.items()},
        "scores": report.scores_path,
        "tar_far_csv": report.tar_far_path,
        "roc": report.roc_path,
    }


def evaluate(
    model: str | Path,
    *,
    bins: list[str | Path] | None = None,
    ijb: str | Path | None = None,
    target: str = "IJBC",
    ijb_protocol: str = "1:1",
    ijb_1n_rule: str = "exact",
    data: str | Path | None = None,
    embeddings: str | Path | None = None,
    detector: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    network: str | None = None,
    flip: bool = True,
    unit_features: bool = False,
    detector_score: bool = True,
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 2,
    figure_format: str = "png",
    progress: Progress | bool | None = None,
) -> EvalResult:
    """Evaluate a model (file or run folder) on verification `.bin` files (default: the held-out `.bin`
    of its training set), an IJB-B/C root (`ijb`, `target`; `ijb_protocol` 1:1, 1:N or both, 1:N's
    threshold rule `ijb_1n_rule` exact or insightface), and/or embed the dataset `data` into the
    file `embeddings` (`detector`: detect and align raw photos first). Results go to `out` (default
    beside the run, see `artifacts.outputs.default_output`)."""
    from topofr_cli.devices import resolve_device
    from topofr_cli.evaluation.ijb_identification import check_protocol
    from topofr_cli.evaluation.verification import default_verification_bins
    from topofr_cli.plots.style import check_format

    progress = resolve_progress(progress)
    if (data is None) != (embeddings is None):
        raise TopofrError("--data and --embeddings go together (dataset in, embeddings file out)")
    if detector is not None and data is None:
        raise TopofrError("--detect applies to --data (a folder of raw photos)")
    check_format(figure_format)
    run_1to1, run_1toN = check_protocol(ijb_protocol, ijb_1n_rule)
    torch_device = resolve_device(device)
    workers = clamped_workers(workers, progress)
    model, loaded = _load(model, network, progress)
    bins = [Path(b) for b in bins or []]
    if not bins and ijb is None and data is None:
        bins = default_verification_bins(loaded.recipe, model)
    out = Path(out) if out is not None else default_output("eval", model)
    results = ([VERIFICATION_CSV] if bins else []) + ([ijb_tar_far_name(target)] if ijb and run_1to1 else [])
    results += [identification_csv_name(target)] if ijb and run_1toN else []
    folder = out if results else None
    embeddings = Path(embeddings) if embeddings is not None else None
    inputs = [model, data, ijb, *bins]
    _check_outputs(folder, embeddings, results, inputs, overwrite)
    with claims([folder, embeddings]):
        _check_outputs(folder, embeddings, results, inputs, overwrite)  # again, now that we hold them
        fresh = folder is not None and is_fresh(folder)
        source = provenance(model, step=loaded.step, network=loaded.network, flip=flip)
        result = EvalResult(
            model, loaded.kind, loaded.network, loaded.step, loaded.embedding_size, flip, source, out=folder
        )
        result.notes = list(loaded.notes)
        common = {"flip": flip, "batch_size": batch_size, "device": torch_device, "num_workers": workers}
        reports = {"provenance": source, "figure_format": figure_format, "progress": progress}
        if bins:
            result.verification = verification_report(
                loaded.backbone, bins, out, figure=_figure(model, loaded), **common, **reports
            )
        if ijb is not None:
            ijb_options = {"use_norm_score": not unit_features, "use_detector_score": detector_score}
            ijb_reports = {**reports, "figure": _figure(model, loaded)}
            if run_1to1:
                result.ijb = ijb_report(
                    loaded.backbone, Path(ijb), target, out, **ijb_options, **common, **ijb_reports
                )
            if run_1toN:  # under `both`, the 1:1 run's pooled templates: the images are embedded once
                templates = result.ijb.result.templates if result.ijb is not None else None
                result.identification = identification(
                    loaded.backbone,
                    Path(ijb),
                    target,
                    out,
                    rule=ijb_1n_rule,
                    templates=templates,
                    **ijb_options,
                    **common,
                    **ijb_reports,
                )
        if folder is not None:
            mark(folder, "eval", fresh=fresh)
        if data is not None:
            dataset = open_data(Path(data), detector, workers=max(1, workers), progress=progress)
            result.embeddings = embeddings_report(
                loaded.backbone, Path(data), embeddings, dataset=dataset, progress=progress, **common
            )
    return result


def _load(model: str | Path, network: str | None, progress: Progress) -> tuple[Path, LoadedModel]:
    """The model file (a run folder's latest checkpoint) and the model, named on the progress stream."""
    from topofr_cli.evaluation.model_io import load_model

    model = resolve_model(model, progress)
    loaded = load_model(model, network)
    step = f", step {loaded.step}" if loaded.step is not None else ""
    progress.message(
        "info", f"model {model}: {loaded.kind}, {loaded.network}, embedding {loaded.embedding_size}{step}"
    )
    for note in loaded.notes:
        progress.message("note", note)
    return model, loaded


def _figure(model: Path, loaded: LoadedModel) -> FigureMeta:
    from topofr_cli.plots.style import FigureMeta, model_label

    return FigureMeta(model=model_label(model), step=loaded.step)


def _check_outputs(
    folder: Path | None, embeddings: Path | None, results: list[str], inputs: list, overwrite: bool
) -> None:
    if folder is not None:
        check_output(folder, REPORT, overwrite=overwrite, results=results, inputs=inputs)
    if embeddings is not None:
        check_output(embeddings, FILE, inputs=inputs)
