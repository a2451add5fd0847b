"""The Python API: lazy top-level names, `embed`, and `TopoFRLoss` for a training loop of one's own."""

from __future__ import annotations

import doctest
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import topofr_cli
from topofr_cli import (
    CombinedMarginHead,
    PartialFC,
    TopoFRLoss,
    create_backbone,
    embed,
    load_model,
    ptsa_loss,
)
from topofr_cli.config import TopoFRConfig
from topofr_cli.engine import topofr_loss
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation import embed as embed_module
from topofr_cli.models.distributed_ops import sharded_cross_entropy

ROOT = Path(__file__).resolve().parent.parent


def test_import_topofr_cli_does_not_load_torch():
    code = "import sys, topofr_cli; print('torch' in sys.modules, topofr_cli.__version__)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["False", topofr_cli.__version__]


def test_every_public_name_resolves_and_has_a_docstring():
    for name in topofr_cli.__all__:
        value = getattr(topofr_cli, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), name
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        topofr_cli.nonsense  # noqa: B018


@pytest.mark.parametrize("module", [topofr_loss, embed_module])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- TopoFRLoss ----------------------------------------------------------------------------------------


def test_classifier_terms_by_hand():
    # two classes, logits (0, ln 3): softmax (1/4, 3/4)
    terms = topofr_loss.classifier_terms(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1]))
    assert terms.p_true.item() == pytest.approx(0.75)
    assert terms.ce.item() == pytest.approx(-math.log(0.75))
    expected = -(0.25 * math.log(0.25 + 1e-5) + 0.75 * math.log(0.75 + 1e-5))
    assert terms.entropy.item() == pytest.approx(expected, rel=1e-6)


def test_classifier_terms_match_the_partial_fc_ones():
    logits = torch.randn(16, 40, generator=torch.Generator().manual_seed(1)) * 8
    labels = torch.arange(16) % 40
    ours = topofr_loss.classifier_terms(logits, labels)
    ce, p_true, entropy = sharded_cross_entropy(logits, labels)
    torch.testing.assert_close(ours.ce, ce)
    torch.testing.assert_close(ours.p_true, p_true)
    torch.testing.assert_close(ours.entropy, entropy)


def _batch(seed: int = 0, batch: int = 12, dim: int = 16, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1
    embeddings = torch.randn(batch, dim, generator=g, requires_grad=True)
    weight = torch.randn(classes, dim, generator=g)
    labels = torch.arange(batch) % classes
    return images, embeddings, weight, labels


def test_without_sde_the_loss_is_mean_ce_plus_alpha_ptsa():
    images, embeddings, weight, labels = _batch()
    head = CombinedMarginHead(scale=30.0, m2=0.5)
    logits = head(F.linear(F.normalize(embeddings), F.normalize(weight)), labels)
    loss_fn = TopoFRLoss(alpha=0.3, sde=False, rsp=False)
    loss = loss_fn(images, embeddings, logits, labels)
    expected = F.cross_entropy(logits, labels) + 0.3 * ptsa_loss(images, embeddings)  # λ starts at 1
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    (scale,) = list(loss_fn.parameters())
    assert scale.grad is not None and scale.grad.item() != 0.0


def test_same_loss_as_the_engine_objective_behind_partial_fc():
    images, embeddings, weight, labels = _batch(seed=3)
    head = CombinedMarginHead(scale=64.0, m2=0.5)
    classifier = PartialFC(embeddings.shape[1], weight.shape[0], head)
    with torch.no_grad():
        classifier.weight.copy_(weight)
    engine = TopoFRObjective(TopoFRConfig(enabled=True))
    engine_loss, engine_terms = engine(
        x_topology=images, embeddings=embeddings, output=classifier(embeddings, labels), step=0
    )
    loss_fn = TopoFRLoss()
    logits = head(F.linear(F.normalize(embeddings), F.normalize(weight)), labels)
    loss = loss_fn(images, embeddings, logits, labels)
    torch.testing.assert_close(loss, engine_loss)
    assert loss_fn.last_terms.keys() == engine_terms.keys()


def test_perturb_is_rsp_or_nothing():
    images = torch.rand(6, 3, 112, 112) * 2 - 1
    assert TopoFRLoss(rsp=False).perturb(images) is images
    perturbed = TopoFRLoss(rsp_prob=1.0).perturb(images, torch.Generator().manual_seed(0))
    assert perturbed.shape == images.shape
    assert ((perturbed - images).flatten(1).abs().amax(dim=1) > 0).all()  # every sample changed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"form": "wrong"}, "form must be one of"),
        ({"alpha": -1.0}, "alpha >= 0"),
        ({"temperature": 0.0}, "temperature > 0"),
    ],
)
def test_bad_settings_are_one_line(kwargs, message):
    with pytest.raises(TopofrError, match=message):
        TopoFRLoss(**kwargs)


def test_bad_logits_shape_is_one_line():
    images, embeddings, _, labels = _batch()
    with pytest.raises(TopofrError, match=r"logits \[B, C\] and labels \[B\]"):
        TopoFRLoss()(images, embeddings, torch.randn(12), labels)


# -- embed -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    model = create_backbone("mbf", embedding_size=32).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from training mode
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)


def test_embed_is_the_normalised_flip_sum(backbone, faces):
    x = (torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = F.normalize(backbone(x) + backbone(x.flip(3)), dim=1)
    got = embed(backbone, faces, batch_size=2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        embed(backbone, faces, flip=False), F.normalize(backbone(x).detach(), dim=1), rtol=1e-5, atol=1e-5
    )


def test_embed_accepts_layouts_and_value_ranges(backbone, faces):
    reference = embed(backbone, faces)
    chw = torch.from_numpy(faces).permute(0, 3, 1, 2)
    torch.testing.assert_close(embed(backbone, chw), reference)
    torch.testing.assert_close(embed(backbone, chw.float() / 255), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        embed(backbone, chw.float() / 255 * 2 - 1, normalized=True), reference, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(embed(backbone, faces[0]), reference[:1])  # one image without N


def test_embed_rejects_wrong_inputs_in_one_line(backbone, faces):
    with pytest.raises(TopofrError, match=r"must lie in \[0, 1\] \(pass normalized=True"):
        embed(backbone, torch.from_numpy(faces).float())
    with pytest.raises(TopofrError, match=r"expected aligned RGB faces .* got shape \(2, 3, 64, 64\)"):
        embed(backbone, torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TopofrError, match="uint8 or float"):
        embed(backbone, torch.zeros(1, 3, 112, 112, dtype=torch.int32))


def test_embed_restores_training_mode_and_takes_a_loaded_model(backbone, faces, tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    loaded = load_model(path, "mbf")
    torch.testing.assert_close(embed(loaded, faces), embed(backbone, faces))
    backbone.train()
    embed(backbone, faces)
    assert backbone.training
    backbone.eval()
