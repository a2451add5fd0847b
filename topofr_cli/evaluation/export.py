"""Export a backbone to ONNX (dynamic batch) and check the file against PyTorch with onnxruntime."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.errors import TopofrError

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
# Largest accepted |onnxruntime − PyTorch|, in units of the output's magnitude when that exceeds 1:
# fp32 rounding grows with the values (an mbf whose outputs reach 15 differs by ~1e-4 from float64
# in PyTorch itself), so a fixed absolute bound would reject correct exports of large-valued models.
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportReport:
    path: Path
    exporter: str  # "dynamo" or "legacy"
    max_abs_diff: float  # onnxruntime vs PyTorch on the check batch
    output_scale: float  # largest |PyTorch output| on the check batch
    check_batch_size: int
    size_bytes: int


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters warn about optional packages (torchvision) and deprecations; not the user's concern."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _export(backbone: torch.nn.Module, example: torch.Tensor, out: Path) -> str:
    """torch.onnx.export through the dynamo exporter, falling back to the TorchScript one."""
    try:
        with _quiet_exporter():
            torch.onnx.export(
                backbone,
                (example,),
                str(out),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False,
                verbose=False,
            )
        return "dynamo"
    except Exception:  # noqa: BLE001 — any dynamo failure: the legacy exporter is the fallback
        out.unlink(missing_ok=True)
    with _quiet_exporter():
        torch.onnx.export(
            backbone,
            (example,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
        )
    return "legacy"


def onnx_max_abs_diff(
    onnx_path: Path, backbone: torch.nn.Module, inputs: torch.Tensor
) -> tuple[float, float]:
    """(largest |onnxruntime − PyTorch|, largest |PyTorch output|) over the embeddings of `inputs`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TopofrError(
            f"{onnx_path}: checking the export needs onnxruntime (pip install 'topofr[onnx]')"
        ) from None
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    with torch.inference_mode():
        expected = backbone(inputs).numpy()
    if got.shape != expected.shape:
        raise TopofrError(
            f"{onnx_path}: onnxruntime output {got.shape} differs from PyTorch {expected.shape}"
        )
    return float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))


def export_onnx(
    backbone: torch.nn.Module,
    out_path: str | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Write `backbone` (fp32, CPU, eval) to `out_path` as ONNX with a dynamic batch axis.

    The file is written beside the target and renamed only after onnxruntime reproduced PyTorch
    within `tolerance` × max(1, largest |output|) on a batch of a size different from the one
    traced (proving the batch axis is really dynamic).
    """
    out_path = Path(out_path)
    if not isinstance(backbone, torch.nn.Module):
        raise TopofrError(f"{out_path}: only PyTorch models can be exported (the input is already ONNX)")
    backbone = backbone.to("cpu", torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(2, 3, 112, 112, generator=generator) * 2 - 1
    check = torch.rand(3, 3, 112, 112, generator=generator) * 2 - 1
    with atomic_path(out_path) as tmp:
        exporter = _export(backbone, example, tmp)
        diff, scale = onnx_max_abs_diff(tmp, backbone, check)
        if not diff <= tolerance * max(1.0, scale):
            raise TopofrError(
                f"{out_path}: ONNX output differs from PyTorch by {diff:.3g} "
                f"(> {tolerance:g} × max(1, output magnitude {scale:.3g})); file not written"
            )
    return ExportReport(
        path=out_path,
        exporter=exporter,
        max_abs_diff=diff,
        output_scale=scale,
        check_batch_size=len(check),
        size_bytes=out_path.stat().st_size,
    )
