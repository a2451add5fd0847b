"""`train.init` / `--init`: every writer's file starts a training from the weights `topofr eval` loads,
with a new head; frozen steps, the lr multiplier and frozen BatchNorm do what they say; provenance."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import pytest
import torch

from topofr_cli.artifacts.checkpoint import Checkpoint, list_checkpoints
from topofr_cli.config import load_recipe
from topofr_cli.engine import finetune, trainer
from topofr_cli.evaluation.model_io import load_model


@pytest.fixture(scope="module")
def data(make_tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "a": make_tiny_dataset(root / "a", classes=4, per_class=6, pairs=0),
        "b": make_tiny_dataset(root / "b", classes=3, per_class=6, pairs=0, seed=7),  # 2 steps an epoch
    }


@pytest.fixture(scope="module")
def topofr_checkpoint(data, tiny_recipe_file, calibrated_backbone, tmp_path_factory) -> Path:
    """A real TopoFR run's checkpoint (two steps: λ has moved off its start), its backbone swapped for
    one whose embeddings depend on the image (two steps leave eval-mode embeddings nearly constant),
    written again by the checkpoint writer."""
    folder = tmp_path_factory.mktemp("pretrain")
    recipe = tiny_recipe_file(folder, data["a"], folder / "run")
    result = trainer.train(load_recipe(recipe, ["schedule.max_steps=2", "topofr.enabled=true"]))
    checkpoint = Checkpoint.read(result.checkpoint)
    checkpoint.backbone = calibrated_backbone("mbf", 32, seed=5).state_dict()
    return checkpoint.write(folder / "pretrained.pt")


def _write(writer: str, backbone: torch.nn.Module, path: Path) -> Path:
    """The file each ecosystem writer produces for `backbone`."""
    state = collections.OrderedDict(backbone.state_dict())
    if writer == "reference":  # backbone and classifier `weight` in one state dict
        state["weight"] = torch.randn(11, 32)
    elif writer == "insightface":  # arcface_torch saves `backbone.module.state_dict()`, or DDP-prefixed
        state = collections.OrderedDict((f"module.{k}", v) for k, v in state.items())
    torch.save(state, path)
    return path


def _init_file(writer, tmp_path, topofr_checkpoint, calibrated_backbone) -> Path:
    if writer == "topofr":
        return topofr_checkpoint
    return _write(writer, calibrated_backbone("mbf", 32, seed=3), tmp_path / f"{writer}.pth")


def _first_forward(monkeypatch) -> dict[str, torch.Tensor]:
    """Record the training backbone's first forward pass (input and output)."""
    seen: dict[str, torch.Tensor] = {}
    original = finetune.prepare_parts

    def record(module, inputs, output):
        if not seen:
            seen["x"], seen["y"] = inputs[0].detach().clone(), output.detach().clone()

    def prepare(recipe, parts, init):
        original(recipe, parts, init)
        parts.backbone.register_forward_hook(record)

    monkeypatch.setattr(finetune, "prepare_parts", prepare)
    return seen


@pytest.mark.parametrize("writer", ["topofr", "reference", "insightface", "state_dict"])
def test_each_writer_starts_training_from_the_weights_eval_loads(
    writer, data, tiny_recipe_file, topofr_checkpoint, calibrated_backbone, tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    init = _init_file(writer, tmp_path, topofr_checkpoint, calibrated_backbone)
    seen = _first_forward(monkeypatch)
    recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / "run")
    # frozen first step: the first forward pass runs in inference mode, as `topofr eval` does
    overrides = ["schedule.max_steps=1", f"train.init={init}", "train.freeze_backbone_steps=1"]
    trainer.train(load_recipe(recipe, overrides))

    evaluated = load_model(init)  # what `topofr eval` scores
    with torch.no_grad():
        expected = evaluated.backbone(seen["x"])
    torch.testing.assert_close(seen["y"], expected, rtol=0, atol=1e-6)
    assert seen["y"].std(0).mean() > 1e-3  # embeddings that depend on the image: the check has teeth

    start = Checkpoint.read(list_checkpoints(tmp_path / "run")[0][1])  # the initial model, step 0
    assert start.step == 0
    loaded = evaluated.backbone.state_dict()
    assert start.backbone.keys() == loaded.keys()
    assert all(torch.equal(start.backbone[k], loaded[k]) for k in loaded)
    assert start.num_classes == 3 and tuple(start.classifier.shape) == (3, 32)  # a new head, new classes
    if evaluated.classifier_weight is not None:
        assert evaluated.classifier_weight.shape[0] != 3
    assert start.objective == {} or writer == "topofr"  # plain run: no objective state


def test_provenance_in_banner_log_recipe_and_every_checkpoint(
    data, tiny_recipe_file, topofr_checkpoint, tmp_path
):
    torch.set_num_threads(1)
    digest = hashlib.sha256(topofr_checkpoint.read_bytes()).hexdigest()
    recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / "run")
    trainer.train(load_recipe(recipe, ["schedule.max_steps=2", f"train.init={topofr_checkpoint}"]))
    log = (tmp_path / "run/train.log").read_text()
    assert f"initialised from {topofr_checkpoint} (sha256 {digest}" in log
    recorded = load_recipe(tmp_path / "run/recipe.yaml").train
    assert (recorded.init, recorded.init_sha256) == (str(topofr_checkpoint), digest)
    found = list_checkpoints(tmp_path / "run")
    assert [s for s, _ in found] == [0, 2]
    for _step, path in found:
        train = Checkpoint.read(path).recipe.train
        assert (train.init, train.init_sha256) == (str(topofr_checkpoint), digest)


def test_frozen_steps_leave_the_backbone_bit_identical(data, tiny_recipe_file, topofr_checkpoint, tmp_path):
    torch.set_num_threads(1)
    recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / "run")
    overrides = [
        "schedule.max_steps=3",
        "train.save_every=1",
        f"train.init={topofr_checkpoint}",
        "train.freeze_backbone_steps=2",
    ]
    trainer.train(load_recipe(recipe, overrides))
    start = Checkpoint.read(topofr_checkpoint).backbone
    states = {step: Checkpoint.read(path) for step, path in list_checkpoints(tmp_path / "run")}
    assert sorted(states) == [0, 1, 2, 3]
    for step in (0, 1, 2):  # weights and BatchNorm statistics alike
        assert all(torch.equal(states[step].backbone[k], start[k]) for k in start), step
        momentum = states[step].training["backbone_optimizer"]["state"]
        assert all(not torch.any(entry["momentum_buffer"]) for entry in momentum.values()), step
    assert not torch.equal(states[2].classifier, states[0].classifier)  # the head did train
    moved = [k for k in start if not torch.equal(states[3].backbone[k], start[k])]
    assert moved  # the first unfrozen step moves the backbone


def test_lr_multiplier_zero_and_frozen_batchnorm_keep_the_whole_backbone(
    data, tiny_recipe_file, topofr_checkpoint, tmp_path
):
    torch.set_num_threads(1)
    start = Checkpoint.read(topofr_checkpoint).backbone
    ends = {}
    for mode in ("update", "frozen"):
        recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / mode)
        overrides = [
            "schedule.max_steps=2",
            f"train.init={topofr_checkpoint}",
            "optim.backbone_lr_multiplier=0",
            f"train.batchnorm={mode}",
        ]
        trainer.train(load_recipe(recipe, overrides))
        ends[mode] = Checkpoint.read(list_checkpoints(tmp_path / mode)[-1][1])
    changed = {
        mode: {k for k in start if not torch.equal(c.backbone[k], start[k])} for mode, c in ends.items()
    }
    # lr × 0: no parameter moves; in update mode only the BatchNorm statistics do
    assert changed["update"] and all("running_" in k or "num_batches" in k for k in changed["update"])
    assert changed["frozen"] == set()
    groups = ends["update"].training["backbone_optimizer"]["param_groups"]
    assert groups[0]["lr_multiplier"] == 0.0 and groups[0]["lr"] == 0.0


def test_lr_multiplier_scales_the_backbone_group_only(data, tiny_recipe_file, topofr_checkpoint, tmp_path):
    torch.set_num_threads(1)
    recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / "run")
    overrides = [
        "schedule.max_steps=1",
        f"train.init={topofr_checkpoint}",
        "optim.backbone_lr_multiplier=0.25",
    ]
    trainer.train(load_recipe(recipe, overrides))
    training = Checkpoint.read(list_checkpoints(tmp_path / "run")[-1][1]).training
    backbone_lr = training["backbone_optimizer"]["param_groups"][0]["lr"]
    classifier_lr = training["classifier_optimizer"]["param_groups"][0]["lr"]
    assert classifier_lr > 0 and backbone_lr == pytest.approx(0.25 * classifier_lr, rel=1e-12)


def test_keep_objective_keeps_lambda_only_when_asked(data, tiny_recipe_file, topofr_checkpoint, tmp_path):
    torch.set_num_threads(1)
    learned = Checkpoint.read(topofr_checkpoint).objective
    assert float(learned["ptsa.log_scale"]) != 0.0  # λ moved during the pretraining
    for keep in (False, True):
        recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / f"keep_{keep}")
        overrides = [
            "schedule.max_steps=1",
            "topofr.enabled=true",
            f"train.init={topofr_checkpoint}",
            f"train.init_keep_objective={str(keep).lower()}",
        ]
        trainer.train(load_recipe(recipe, overrides))
        start = Checkpoint.read(list_checkpoints(tmp_path / f"keep_{keep}")[0][1]).objective
        assert start.keys() == learned.keys()
        if keep:
            assert all(torch.equal(start[k], learned[k]) for k in learned)
        else:
            assert float(start["ptsa.log_scale"]) == 0.0  # λ = 1, fresh


def test_finetune_quickstart_starts_from_the_checkpoint_quickstart_ends_with():
    from topofr_cli.artifacts.checkpoint import checkpoint_path
    from topofr_cli.recipes import resolve_recipe

    quick = load_recipe(resolve_recipe("quickstart"))
    tune = load_recipe(resolve_recipe("finetune_quickstart"))
    spec = quick.data.synthetic
    last_step = quick.schedule.epochs * (spec.identities * spec.images_per_identity // quick.data.batch_size)
    assert tune.train.init == str(checkpoint_path(quick.train.output, last_step))
    assert Path(tune.train.init).name == "step_00000092.pt"  # the name README and the issue use
    assert (tune.model.network, tune.model.embedding_size) == (
        quick.model.network,
        quick.model.embedding_size,
    )
    assert tune.data.synthetic.seed != spec.seed  # other identities than the model was trained on
    assert tune.data.path != quick.data.path and tune.train.output != quick.train.output


def test_resume_keeps_the_runs_own_record_of_how_it_started(
    data, tiny_recipe_file, topofr_checkpoint, tmp_path
):
    torch.set_num_threads(1)
    recipe = tiny_recipe_file(tmp_path, data["b"], tmp_path / "run")
    trainer.train(load_recipe(recipe, ["schedule.max_steps=1"]))  # a run from scratch
    later = load_recipe(recipe, ["schedule.max_steps=2", f"train.init={topofr_checkpoint}"])
    assert trainer.train(later, resume=True).steps == 2  # --resume wins: no error, no reload
    assert load_recipe(tmp_path / "run/recipe.yaml").train.init is None  # no false record
    assert Checkpoint.read(list_checkpoints(tmp_path / "run")[-1][1]).recipe.train.init is None
