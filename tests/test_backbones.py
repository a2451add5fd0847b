"""Backbones: insightface parameter names/shapes (docs/method.md §3.5), forward shapes, checkpointing, channels-last."""

from __future__ import annotations

import pytest
import torch

from topofr_cli.errors import TopofrError
from topofr_cli.models import create_backbone

torch.set_num_threads(1)

# docs/method.md §3.5, restated here independently of the implementation.
DEPTHS = {
    "r18": [2, 2, 2, 2],
    "r34": [3, 4, 6, 3],
    "r50": [3, 4, 14, 3],
    "r100": [3, 13, 30, 3],
    "r200": [6, 26, 60, 6],
}
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{s}": (() if s == "num_batches_tracked" else (channels,)) for s in BN_SUFFIXES}


def expected_iresnet_state(depths: list[int], embedding: int) -> dict[str, tuple[int, ...]]:
    """insightface IResNet state-dict keys and shapes, built from the published layout."""
    state = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (64,)}
    previous = 64
    for stage, (width, depth) in enumerate(zip([64, 128, 256, 512], depths, strict=True), start=1):
        for k in range(depth):
            inp = previous if k == 0 else width
            p = f"layer{stage}.{k}"
            state.update(_bn(f"{p}.bn1", inp))
            state[f"{p}.conv1.weight"] = (width, inp, 3, 3)
            state.update(_bn(f"{p}.bn2", width))
            state[f"{p}.prelu.weight"] = (width,)
            state[f"{p}.conv2.weight"] = (width, width, 3, 3)
            state.update(_bn(f"{p}.bn3", width))
        state[f"layer{stage}.0.downsample.0.weight"] = (width, previous, 1, 1)
        state.update(_bn(f"layer{stage}.0.downsample.1", width))
        previous = width
    state.update(_bn("bn2", 512))
    state["fc.weight"] = (embedding, 512 * 7 * 7)
    state["fc.bias"] = (embedding,)
    state.update(_bn("features", embedding))
    return state


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["r18", "r34", "r50"])
def test_iresnet_state_dict_matches_insightface_layout(name):
    with torch.device("meta"):
        model = create_backbone(name, 256)
    assert _shapes(model) == expected_iresnet_state(DEPTHS[name], 256)


@pytest.mark.parametrize("name,depths", [("r100", DEPTHS["r100"]), ("r200", DEPTHS["r200"])])
def test_deep_iresnet_key_counts(name, depths):
    with torch.device("meta"):
        model = create_backbone(name)
    # Per block: 3 BNs × 5 entries + conv1 + conv2 + prelu; per stage a downsample conv + BN;
    # stem conv + BN + PReLU; bn2; fc weight + bias; features BN.
    expected = 18 * sum(depths) + 4 * 6 + 7 + 5 + 2 + 5
    assert len(model.state_dict()) == expected
    assert set(model.state_dict()) == set(expected_iresnet_state(depths, 512))


def test_iresnet_forward_shape_and_fixed_feature_scale():
    model = create_backbone("r18", 32, dropout=0.2).eval()
    out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    assert not model.features.weight.requires_grad
    assert torch.equal(model.features.weight, torch.ones(32))
    assert model.dropout.p == 0.2


def test_state_dict_round_trip_gives_same_embeddings():
    torch.manual_seed(0)
    source = create_backbone("r18", 16).eval()
    target = create_backbone("r18", 16).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(source(x), target(x))


def test_mobilefacenet_layout_and_shape():
    model = create_backbone("mbf", 128).eval()
    shapes = _shapes(model)
    # Anchors from insightface's mbf checkpoints (width scale 2, GDC head).
    assert shapes["layers.0.layers.0.weight"] == (128, 3, 3, 3)
    assert shapes["layers.1.layers.0.weight"] == (128, 2, 3, 3)  # grouped conv, 64 groups
    assert shapes["layers.2.layers.1.layers.0.weight"] == (128, 1, 3, 3)
    assert shapes["layers.5.layers.5.layers.2.layers.0.weight"] == (256, 256, 1, 1)
    assert shapes["conv_sep.layers.0.weight"] == (512, 256, 1, 1)
    assert shapes["features.layers.0.layers.0.weight"] == (512, 1, 7, 7)
    assert shapes["features.layers.2.weight"] == (128, 512)
    assert "features.layers.2.bias" not in shapes
    assert shapes["features.layers.3.running_var"] == (128,)
    out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 128) and torch.isfinite(out).all()


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(TopofrError) as info:
        create_backbone("r42")
    message = str(info.value)
    assert "r42" in message and "\n" not in message
    for name in ("r18", "r34", "r50", "r100", "r200", "mbf"):
        assert name in message


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_gradient_checkpointing_matches_plain(name):
    torch.manual_seed(1)
    plain = create_backbone(name, 16)
    checkpointed = create_backbone(name, 16, gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    out_plain, grads_plain = _train_step(plain, x)
    out_ckpt, grads_ckpt = _train_step(checkpointed, x)
    torch.testing.assert_close(out_ckpt, out_plain)
    assert grads_ckpt.keys() == grads_plain.keys() and len(grads_plain) > 0
    for key, grad in grads_plain.items():
        torch.testing.assert_close(grads_ckpt[key], grad, rtol=1e-4, atol=1e-5, msg=key)
    # The recomputation in backward must not update BatchNorm statistics a second time.
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(checkpointed.state_dict()[key], value, msg=key)


@pytest.mark.parametrize("name", ["r18", "mbf"])
def test_channels_last_gives_same_embeddings(name):
    torch.manual_seed(2)
    model = create_backbone(name, 16).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
