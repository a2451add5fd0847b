"""load_model on our checkpoints, the reference-layout and insightface-layout state dicts, and bad files."""

from __future__ import annotations

import collections

import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.model_io import infer_network, load_model
from topofr_cli.models import create_backbone


def _randomised(network, seed=0, embedding_size=512):
    torch.manual_seed(seed)
    model = create_backbone(network, embedding_size)
    with torch.no_grad():  # non-trivial BN statistics, so a mis-loaded buffer would show
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_checkpoint_round_trip(calibrated_backbone, tmp_path):
    model = calibrated_backbone("mbf", 128)
    classifier = torch.randn(7, 128)
    path = tmp_path / "step_00000010.pt"
    torch.save(
        {
            "format": "topofr-checkpoint",
            "topofr_version": "0.1.0",
            "model": {"network": "mbf", "embedding_size": 128, "num_classes": 7},
            "recipe": {"data": {"path": "somewhere"}},
            "step": 10,
            "epoch": 0,
            "backbone": model.state_dict(),
            "classifier": classifier,
            "latent_scale": None,
            "training": {},
        },
        path,
    )
    loaded = load_model(path)
    assert (loaded.kind, loaded.network, loaded.embedding_size, loaded.num_classes, loaded.step) == (
        "topofr-checkpoint",
        "mbf",
        128,
        7,
        10,
    )
    assert loaded.recipe.data.path == "somewhere"  # parsed into the typed recipe, defaults filled in
    assert loaded.recipe.head.scale == 64.0
    assert torch.equal(loaded.classifier_weight, classifier)
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone(x), model(x))


def test_reference_layout_state_dict_infers_r18_and_splits_the_classifier(tmp_path):
    model = _randomised("r18")
    state = collections.OrderedDict(model.state_dict())
    state["weight"] = torch.randn(11, 512)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    loaded = load_model(path)
    assert (loaded.kind, loaded.network, loaded.num_classes) == ("reference", "r18", 11)
    assert any("inferred" in note and "r18" in note for note in loaded.notes)
    assert torch.equal(loaded.classifier_weight, state["weight"])
    assert _same_weights(loaded.backbone, model)


def test_insightface_layout_with_ddp_prefix(tmp_path):
    model = _randomised("r34", seed=1)
    path = tmp_path / "backbone.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = load_model(path)
    assert (loaded.kind, loaded.network, loaded.classifier_weight) == ("insightface", "r34", None)
    assert _same_weights(loaded.backbone, model)


def test_mbf_keys_are_recognised():
    assert infer_network(create_backbone("mbf").state_dict(), "x.pt") == "mbf"


def test_wrong_architecture_names_file_and_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create_backbone("r18").state_dict(), path)
    with pytest.raises(TopofrError) as info:
        load_model(path, network="r34")
    message = str(info.value)
    assert "r18.pth" in message and "r34" in message and "missing" in message and "layer1.2." in message
    assert "\n" not in message


def test_unknown_block_counts_ask_for_network(tmp_path):
    state = create_backbone("r18").state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer4.1.")}
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(TopofrError, match=r"odd.pth.*\[2, 2, 2, 1\].*--network"):
        load_model(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_arbitrary_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(TopofrError, match="evil.pt.*weights_only"):
        load_model(path)
    assert "must not run" not in capsys.readouterr().out


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(TopofrError, match="junk.pt"):
        load_model(path)
    with pytest.raises(TopofrError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")


def test_calibrated_embeddings_differ_between_images(calibrated_backbone):
    """The conftest backbone really depends on its input (else the round trips above prove little)."""
    model = calibrated_backbone()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert (out[0] - out[1]).abs().max() > 0.1 * out.abs().max()
