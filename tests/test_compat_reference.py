"""`topofr.compat: reference` against transcriptions of the reference implementation's arithmetic.

Each transcription below follows the reference's train loop (docs/method.md §2) with plain NumPy /
PyTorch operations, independently of the project's vectorised code: the integer w2 filled from an
fp16 softmax, the `2·arange(n // 2)` negation, one GUM per process, and one clip over backbone and
classifier together.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn import preprocessing
from test_gum import numpy_gum
from torch import nn

from topofr_cli.config import load_recipe
from topofr_cli.engine import compat
from topofr_cli.engine.distributed import DistContext
from topofr_cli.engine.objective import PlainObjective, build_objective
from topofr_cli.engine.step import TrainStep
from topofr_cli.hardness.sds import negated_positions, sample_weights, sde_statistic, sde_weights
from topofr_cli.models import CombinedMarginHead, PartialFC, create_backbone
from topofr_cli.recipes import PACKAGED_DIR

CPU = DistContext(0, 0, 1, torch.device("cpu"), None)


def recipe(mode: str, *extra: str):
    return load_recipe(None, ["topofr.enabled=true", f"topofr.compat={mode}", *extra])


# -- item 2: w2 from the fp16 softmax, cast to an integer --------------------------------------------
def reference_w2(logits_fp16: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference: softmax of fp16 logits; `ones_like(labels)` (int64) filled per sample; 1 − that."""
    softmax = torch.softmax(logits_fp16, dim=1)  # fp16 in, fp16 out
    probability_gt = torch.ones_like(labels)
    for i in range(labels.shape[0]):
        probability_gt[i] = softmax[i][labels[i]]
    return 1 - probability_gt


def test_w2_gate_matches_the_fp16_reference():
    # target probabilities spread across the fp16 rounding edge 1 − 2⁻¹² ≈ 0.999756
    generator = torch.Generator().manual_seed(3)
    n, classes = 400, 50
    logits = torch.randn(n, classes, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    margin = torch.linspace(6.0, 12.0, n)  # target logit above the rest: p_gt from ~0.9 to ~0.99999
    logits[torch.arange(n), labels] = logits.max(dim=1).values + margin
    logits = logits.half()  # the reference's logits are fp16
    p_true = torch.softmax(logits.float(), dim=1)[torch.arange(n), labels]
    expected = reference_w2(logits, labels).float()
    _, w2 = sample_weights(torch.full((n,), 0.5), p_true, compat="reference", softmax_dtype=torch.float16)
    assert torch.equal(w2, expected)
    gated = (expected == 0).float().mean().item()
    assert 0.2 < gated < 0.8  # the gate is active for part of the batch: the test can tell the modes apart
    _, w2_fp32 = sample_weights(torch.full((n,), 0.5), p_true, compat="reference")
    assert (w2_fp32 == 0).sum() < (w2 == 0).sum()  # fp32 p_gt is 1.0 far more rarely
    _, w2_fixed = sample_weights(torch.full((n,), 0.5), p_true, compat="fixed")
    assert torch.allclose(w2_fixed, 1 - p_true)


def test_objective_takes_the_autocast_dtype_in_reference_mode_only():
    gpu_like = DistContext(0, 0, 1, torch.device("cuda"), None)  # fp16 stays fp16 off the CPU
    assert (
        build_objective(recipe("reference", "train.precision=fp16"), gpu_like).softmax_dtype == torch.float16
    )
    assert build_objective(recipe("reference", "train.precision=fp16"), CPU).softmax_dtype == torch.bfloat16
    assert build_objective(recipe("reference", "train.precision=fp32"), CPU).softmax_dtype is None
    assert build_objective(recipe("fixed", "train.precision=fp16"), gpu_like).softmax_dtype is None


# -- item 3: the negation pattern, odd n included -----------------------------------------------------
def reference_statistic(entropy: np.ndarray) -> np.ndarray:
    h = entropy.copy()
    h[2 * np.arange(len(h) // 2)] = -1 * h[2 * np.arange(len(h) // 2)]
    return preprocessing.scale(h.reshape(-1, 1).astype(float))[:, 0]


@pytest.mark.parametrize("n", [2, 7, 8, 129, 513])
def test_negation_pattern_matches_the_reference(n):
    entropy = np.random.default_rng(n).uniform(0.0, 5.0, n)
    ours = sde_statistic(torch.from_numpy(entropy), compat="reference").numpy()
    np.testing.assert_allclose(ours, reference_statistic(entropy), rtol=1e-12, atol=1e-12)
    fixed = sde_statistic(torch.from_numpy(entropy), compat="fixed").numpy()
    if n % 2:  # fixed also negates the last (even) position
        assert not np.allclose(fixed, ours)
        assert negated_positions(n, "fixed")[-1] and not negated_positions(n, "reference")[-1]
    else:
        np.testing.assert_array_equal(fixed, ours)


# -- item 4: one GUM per rank ----------------------------------------------------------------------
def test_per_rank_gum_matches_one_reference_fit_per_process():
    ranks, local = 4, 33  # odd local batches exercise the per-rank negation pattern too
    rng = np.random.default_rng(5)
    entropy = np.concatenate([rng.exponential(1.0, local * ranks - 9), rng.uniform(6, 9, 9)])
    rng.shuffle(entropy)
    p_true = torch.from_numpy(rng.uniform(0, 0.9, local * ranks))
    expected_gamma = np.concatenate(
        [numpy_gum(reference_statistic(chunk))[0] for chunk in entropy.reshape(ranks, local)]
    )
    w1, _, gum = sde_weights(torch.from_numpy(entropy), p_true, compat="reference", groups=ranks)
    np.testing.assert_allclose(gum.gamma.numpy(), expected_gamma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w1.numpy(), 2.0 - expected_gamma, rtol=1e-9)
    assert gum.pi.shape == (ranks,)
    _, _, global_fit = sde_weights(torch.from_numpy(entropy), p_true, compat="reference")
    assert np.abs(global_fit.gamma.numpy() - expected_gamma).max() > 1e-3  # one global fit is different


def test_objective_fits_per_rank_in_reference_mode_only():
    from topofr_cli.engine.topofr_objective import TopoFRObjective

    assert TopoFRObjective(recipe("reference").topofr, world_size=4).gum_groups == 4
    assert TopoFRObjective(recipe("fixed").topofr, world_size=4).gum_groups == 1


# -- item 5: joint clipping and the scaler --------------------------------------------------------
def _parts(clip_classifier: bool):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8))
    classifier = PartialFC(8, 5, CombinedMarginHead(scale=64.0, m2=0.5))
    return backbone, classifier


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)


def _run_step(clip_classifier: bool, images, labels):
    backbone, classifier = _parts(clip_classifier)
    optimizers = [_sgd(backbone.parameters()), _sgd(classifier.parameters())]
    step = TrainStep(
        backbone=backbone,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=PlainObjective(),
        optimizers=optimizers,
        precision="fp32",
        dist_ctx=CPU,
        clip_grad_norm=5.0,
        channels_last=False,
        horizontal_flip=False,
        seed=0,
        clip_classifier=clip_classifier,
    )
    result = step(images, labels, 0)
    return backbone, classifier, result


def test_joint_clipping_matches_the_reference_step():
    images = torch.randint(0, 256, (6, 3, 112, 112), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    backbone, classifier, result = _run_step(True, images, labels)
    # The reference: one parameter list (its classifier weight belongs to the backbone), one clip
    ref_backbone, ref_classifier = _parts(True)
    params = [*ref_backbone.parameters(), *ref_classifier.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = images.float() / 255.0 * 2.0 - 1.0
    loss = ref_classifier(ref_backbone(x), labels).ce.mean()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, 5.0)
    optimizer.step()
    assert norm.item() > 5.0  # the clip is active, so the test separates the modes
    assert torch.allclose(result.grad_norm, norm, rtol=1e-5)
    for ours, theirs in zip([*backbone.parameters(), *classifier.parameters()], params, strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    _, fixed_classifier, _ = _run_step(False, images, labels)
    assert not torch.allclose(fixed_classifier.weight, classifier.weight, rtol=1e-4, atol=1e-6)


def test_step_options_follow_compat():
    assert compat.step_options(recipe("reference")) == {
        "clip_classifier": True,
        "scaler_growth_interval": 100,
    }
    # the scaler follows insightface (100) in both modes: the reference took it from there
    assert compat.step_options(recipe("fixed")) == {"clip_classifier": False, "scaler_growth_interval": 100}


# -- item 1: the embedding BatchNorm weight --------------------------------------------------------
@pytest.mark.parametrize("mode", ["fixed", "reference"])
def test_embedding_batchnorm_weight_trains_in_reference_mode_only(mode):
    run = recipe(
        mode,
        "model.network=r18",
        "model.embedding_size=16",
        "train.precision=fp32",
        "topofr.rsp.enabled=false",
    )
    torch.manual_seed(0)
    backbone = create_backbone("r18", 16, **compat.backbone_options(run))
    classifier = PartialFC(16, 3, CombinedMarginHead())
    objective = build_objective(run, CPU)
    groups = [{"params": list(backbone.parameters())}]
    groups += [{"params": [p for p in objective.parameters() if p.requires_grad], "weight_decay": 0.0}]
    optimizers = [_sgd([g for g in groups if g["params"]]), _sgd(classifier.parameters())]
    step = TrainStep(
        backbone=backbone,
        backbone_params=list(backbone.parameters()),
        classifier=classifier,
        objective=objective,
        optimizers=optimizers,
        precision="fp32",
        dist_ctx=CPU,
        clip_grad_norm=5.0,
        channels_last=False,
        horizontal_flip=False,
        seed=0,
        **compat.step_options(run),
    )
    before = copy.deepcopy(backbone.features.weight.detach())
    generator = torch.Generator().manual_seed(1)
    step(
        torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8, generator=generator),
        torch.tensor([0, 1, 2, 0]),
        0,
    )
    weight = backbone.features.weight
    if mode == "reference":
        assert weight.requires_grad
        assert not torch.equal(weight.detach(), before)
        decayed = [
            g["weight_decay"] for g in optimizers[0].param_groups if any(p is weight for p in g["params"])
        ]
        assert decayed == [5e-4]
    else:
        assert not weight.requires_grad
        assert torch.equal(weight.detach(), torch.ones_like(before))


# -- recipes: the reference's configs ----------------------------------------------------------------
REFERENCE_CONFIGS = {  # configs/<name>.py of the reference: (epochs, weight decay, classes)
    "ms1mv2_r50": (30, 5e-4, 85742),
    "ms1mv2_r100": (25, 5e-4, 85742),
    "ms1mv2_r200": (30, 5e-4, 85742),
    "glint360k_r50": (25, 1e-4, 360232),
    "glint360k_r100": (25, 1e-4, 360232),
    "glint360k_r200": (30, 1e-4, 360232),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_recipes_follow_the_reference_configs(name):

    path = PACKAGED_DIR / f"{name}.yaml"
    run = load_recipe(path)
    epochs, weight_decay, classes = REFERENCE_CONFIGS[name]
    assert (run.schedule.epochs, run.optim.weight_decay, run.head.num_classes) == (
        epochs,
        weight_decay,
        classes,
    )
    assert run.model.network == name.split("_")[1] and run.model.embedding_size == 512
    assert (run.optim.lr, run.optim.momentum, run.optim.clip_grad_norm, run.schedule.power) == (
        0.1,
        0.9,
        5.0,
        2.0,
    )
    assert (run.schedule.warmup_epochs, run.data.batch_size, run.train.precision) == (0.0, 128, "fp16")
    assert (run.head.scale, run.head.m1, run.head.m2, run.head.m3, run.head.sample_rate) == (
        64.0,
        1.0,
        0.5,
        0.0,
        1.0,
    )
    assert "follows the reference implementation's config" in path.read_text().lower()
