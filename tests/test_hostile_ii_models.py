"""Models that cannot be right (issue 19, class 6 and the checkpoint cases of class 10): non-finite
weights refused on load with the checksum recomputed, forged counters refused, torch's advice to load
with weights_only=False never repeated, non-finite embeddings flagged as degenerate."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from topofr_cli.artifacts.checkpoint import Checkpoint
from topofr_cli.artifacts.digest import ALGORITHM, content_digest
from topofr_cli.cli.app import app
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.degeneracy import embedding_degeneracy
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.models import create_backbone


def forged_checkpoint(path, change):
    """A real checkpoint of an mbf backbone, changed by `change(payload)`, checksum recomputed (as a
    forger or a buggy tool would)."""
    backbone = create_backbone("mbf", 8).state_dict()
    Checkpoint(
        network="mbf", embedding_size=8, num_classes=3, backbone=backbone, classifier=torch.ones(3, 8), step=2
    ).write(path)
    payload = torch.load(path, weights_only=True)
    del payload["checksum"]
    change(payload)
    payload["checksum"] = {"algorithm": ALGORITHM, "digest": content_digest(payload)}
    torch.save(payload, path)
    return path


def _all_nan(payload):
    for tensor in payload["backbone"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_all_nan, "holds non-finite values"),
        (lambda p: p["classifier"].__setitem__((0, 0), float("inf")), "'classifier' holds non-finite"),
        (lambda p: p.__setitem__("version", 99), "checkpoint 'version' is '99'"),
        (lambda p: p.__setitem__("version", "2"), "checkpoint 'version' is '2'"),
        (lambda p: p.__setitem__("step", -5), "checkpoint 'step' is '-5'"),
        (lambda p: p.__setitem__("step", 1e300), r"checkpoint 'step' is '1e\+300'"),
        (lambda p: p.__setitem__("epoch", "x"), "checkpoint 'epoch' is 'x'"),
    ],
)
def test_forged_checkpoints_are_refused_on_load(tmp_path, change, fragment):
    path = forged_checkpoint(tmp_path / "model.pt", change)
    with pytest.raises(TopofrError, match=f"^{tmp_path}/model.pt: .*{fragment}") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    with pytest.raises(TopofrError, match=fragment):
        Checkpoint.read(path)


def test_foreign_state_dict_with_nan_weights_is_refused(tmp_path):
    state = create_backbone("mbf", 8).state_dict()
    next(t for t in state.values() if t.is_floating_point())[0] = float("nan")
    torch.save(state, tmp_path / "foreign.pt")
    with pytest.raises(TopofrError, match=r"foreign\.pt: refused: weight '.+' holds non-finite values"):
        load_model(tmp_path / "foreign.pt")


def test_nan_checkpoint_through_eval_is_one_line(tmp_path):
    from topofr_cli.data.bins import write_bin
    from topofr_cli.data.images import encode_jpeg

    path = forged_checkpoint(tmp_path / "model.pt", _all_nan)
    images = [encode_jpeg(np.full((112, 112, 3), 10 * i, np.uint8)) for i in range(4)]
    write_bin(tmp_path / "pairs.bin", images, [True, False])
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(path),
            "--bin",
            str(tmp_path / "pairs.bin"),
            "--out",
            str(tmp_path / "r"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "holds non-finite values" in errors[0], result.output
    assert not (tmp_path / "r").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("reader", [load_model, Checkpoint.read])
def test_malicious_pt_refusal_never_advises_weights_only_false(tmp_path, reader):
    torch.save({"format": "topofr-checkpoint", "x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(TopofrError) as info:
        reader(tmp_path / "evil.pt")
    message = str(info.value)
    assert "evil.pt" in message and "\n" not in message
    assert "weights_only=False" not in message.replace(" ", "") and "set to `False`" not in message
    assert "posix.system" in message or "os.system" in message or "GLOBAL" in message, message


def test_non_finite_embeddings_are_degenerate():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 8))
    assert embedding_degeneracy(emb)[1] is False
    emb[3, 2] = np.nan
    mean, degenerate = embedding_degeneracy(emb)
    assert degenerate is True and np.isnan(mean)
    emb[3, 2] = np.inf
    assert embedding_degeneracy(emb)[1] is True


def test_onnx_model_with_a_nan_initializer_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    def model(weight):
        graph = helper.make_graph(
            [
                helper.make_node("Flatten", ["x"], ["flat"]),
                helper.make_node("MatMul", ["flat", "w"], ["emb"]),
            ],
            "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 112, 112])],
            [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, 4])],
            [numpy_helper.from_array(weight, "w")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    weight = np.full((3 * 112 * 112, 4), 0.01, np.float32)
    onnx.save(model(weight), tmp_path / "ok.onnx")
    assert load_model(tmp_path / "ok.onnx").embedding_size == 4
    weight[5, 2] = np.nan
    onnx.save(model(weight), tmp_path / "nan.onnx")
    with pytest.raises(TopofrError, match=r"nan\.onnx: refused: weight 'w' holds non-finite values"):
        load_model(tmp_path / "nan.onnx")
