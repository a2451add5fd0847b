"""`topofr export` as one call: the backbone as ONNX, checked against PyTorch with onnxruntime.

import topofr_cli as tf
report = tf.export_model("runs/quickstart", "model.onnx").report
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.outputs import FILE, check_output
from topofr_cli.commands.common import claims, resolve_model
from topofr_cli.progress import Progress, resolve_progress, stage

if TYPE_CHECKING:
    from topofr_cli.evaluation.export import ExportReport


@dataclass
class ExportResult:
    model: Path  # the model file exported (a run folder's latest checkpoint when a folder was named)
    network: str
    report: ExportReport  # path, exporter, max |onnxruntime − torch|, output scale, batch, size

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "network": self.network, **asdict(self.report)}


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    network: str | None = None,
    tolerance: float = 1e-4,
    progress: Progress | bool | None = None,
) -> ExportResult:
    """Export `model`'s backbone to the ONNX file `out` (replaced if it exists; never the model itself)."""
    from topofr_cli.evaluation.export import export_onnx
    from topofr_cli.evaluation.model_io import load_model

    progress = resolve_progress(progress)
    out = Path(out)
    model = resolve_model(model, progress)
    check_output(out, FILE, inputs=[model])
    with claims([out]):
        check_output(out, FILE, inputs=[model])
        loaded = load_model(model, network)
        for note in loaded.notes:
            progress.message("note", note)
        with stage(progress, f"exporting {loaded.network} to ONNX and checking it with onnxruntime"):
            report = export_onnx(loaded.backbone, out, tolerance=tolerance)
    return ExportResult(model, loaded.network, report)
