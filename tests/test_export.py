"""ONNX export through the CLI: dynamic batch, onnxruntime agrees with PyTorch, load_model runs the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.embed import embed_images
from topofr_cli.evaluation.export import export_onnx
from topofr_cli.evaluation.model_io import load_model

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(calibrated_backbone, tmp_path_factory):
    """One export (the slow part) through `topofr export`, shared by the checks below."""
    root = tmp_path_factory.mktemp("export")
    model = calibrated_backbone("mbf", 64)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, root / "backbone.pth")
    out = root / "out" / "mbf.onnx"
    result = CliRunner().invoke(app, ["export", str(root / "backbone.pth"), str(out)])
    return {"model": model, "out": out, "result": result}


def test_export_cli_reports_the_difference(exported):
    result = exported["result"]
    assert result.exit_code == 0, result.output
    assert "max |onnxruntime − torch| = " in result.output
    diff = float(result.output.split("max |onnxruntime − torch| = ")[1].split()[0])
    scale = float(result.output.split("outputs up to ")[1].split(")")[0])
    assert 0 < diff <= 1e-4 * max(1.0, scale) and scale > 1e-2  # a model whose outputs are not ~0
    assert "inferred" in result.output and "mbf" in result.output
    assert [p.name for p in exported["out"].parent.iterdir()] == ["mbf.onnx"]  # no temp file left


def test_onnx_round_trip(exported):
    session = ort.InferenceSession(str(exported["out"]), providers=["CPUExecutionProvider"])
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # symbolic batch axis
    loaded = load_model(exported["out"])
    assert loaded.kind == "onnx" and loaded.embedding_size == 64
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 112, 112), dtype=np.uint8))
    batches = [images[:4], images[4:]]  # batch sizes 4 and 1: neither was traced
    from_onnx = embed_images(loaded.backbone, batches, flip=True)
    from_torch = embed_images(exported["model"], batches, flip=True)
    np.testing.assert_allclose(from_onnx, from_torch, atol=2e-4)


def test_exporting_an_onnx_model_is_refused(tmp_path):
    with pytest.raises(TopofrError, match="already ONNX"):
        export_onnx(lambda x: x, tmp_path / "x.onnx")


def test_a_failed_check_leaves_no_file(tmp_path):
    class Drifting(torch.nn.Module):
        """Traces to a constant-free graph but differs between runs, so the check must fail."""

        def forward(self, x):
            return x.mean(dim=(2, 3)) + torch.rand(x.shape[0], 3)

    with pytest.raises(TopofrError, match="differs from PyTorch"):
        export_onnx(Drifting(), tmp_path / "d.onnx")
    assert list(tmp_path.iterdir()) == []
