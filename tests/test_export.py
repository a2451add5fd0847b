"""ONNX export: dynamic batch, onnxruntime agrees with PyTorch, and load_model runs the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.embed import embed_images
from topofr_cli.evaluation.export import export_onnx
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.models import create_backbone

ort = pytest.importorskip("onnxruntime")


def _trained_looking_mbf():
    torch.manual_seed(0)
    model = create_backbone("mbf", 64)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_onnx_round_trip(tmp_path):
    model = _trained_looking_mbf()
    report = export_onnx(model, tmp_path / "out" / "mbf.onnx")
    assert report.path.is_file() and report.max_abs_diff <= 1e-4
    assert not [p for p in report.path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] not in (1, 2, 3)  # symbolic batch axis

    loaded = load_model(report.path)
    assert loaded.kind == "onnx" and loaded.embedding_size == 64
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 112, 112), dtype=np.uint8))
    batches = [images[:4], images[4:]]  # batch sizes 4 and 1: neither was traced
    from_onnx = embed_images(loaded.backbone, batches, flip=True)
    from_torch = embed_images(model, batches, flip=True)
    np.testing.assert_allclose(from_onnx, from_torch, atol=2e-4)


def test_exporting_an_onnx_model_is_refused(tmp_path):
    with pytest.raises(TopofrError, match="already ONNX"):
        export_onnx(lambda x: x, tmp_path / "x.onnx")


def test_export_cli_reports_the_difference(tmp_path):
    from typer.testing import CliRunner

    from topofr_cli.cli.app import app

    model = _trained_looking_mbf()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "backbone.pth")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "backbone.pth"), str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "max |onnxruntime − torch| = " in result.output and (tmp_path / "m.onnx").is_file()
    assert "inferred" in result.output and "mbf" in result.output
