"""`topofr train` user errors: one line, exit code 2, and nothing in the run directory touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from topofr_cli.artifacts.checkpoint import Checkpoint, checkpoint_path
from topofr_cli.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(make_tiny_dataset, tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("d") / "data", classes=4, per_class=4, pairs=0)


def snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(*args: str):
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, " ".join(result.output.split())


def test_missing_data_path_says_set_data_path(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train: {{output: '{tmp_path / 'run'}'}}\n")
    code, out = invoke(str(recipe))
    assert code == 2 and "set data.path" in out
    assert not (tmp_path / "run").exists()


def test_nonexistent_data_path(tiny_recipe_file, tmp_path):
    recipe = tiny_recipe_file(tmp_path, tmp_path / "nowhere", tmp_path / "run")
    code, out = invoke(str(recipe))
    assert code == 2 and "nowhere: data.path does not exist" in out


def test_class_count_mismatch(tiny_recipe_file, tmp_path, data):
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run")
    code, out = invoke(str(recipe), "--set", "head.num_classes=7")
    assert code == 2 and "dataset has 4 classes but the recipe's head.num_classes is 7" in out
    assert not (tmp_path / "run").exists()


def test_unwritable_run_directory(tiny_recipe_file, tmp_path, data):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    recipe = tiny_recipe_file(tmp_path, data, blocker / "run")
    code, out = invoke(str(recipe))
    assert code == 2 and "not writable" in out
    assert blocker.read_text() == "x"


def test_non_empty_run_dir_is_refused_without_overwrite(tiny_recipe_file, tmp_path, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    recipe = tiny_recipe_file(tmp_path, data, run)
    code, out = invoke(str(recipe))
    assert code == 2 and "not empty" in out and "--overwrite" in out
    assert snapshot(run) == {"notes.txt": b"keep me"}


def test_resume_without_checkpoint(tiny_recipe_file, tmp_path, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step\n")
    recipe = tiny_recipe_file(tmp_path, data, run)
    code, out = invoke(str(recipe), "--resume")
    assert code == 2 and "holds no checkpoint" in out
    assert snapshot(run) == {"metrics.csv": b"step\n"}


def test_resume_from_another_architecture(tiny_recipe_file, tmp_path, data):
    run = tmp_path / "run"
    Checkpoint(
        network="r18",
        embedding_size=32,
        num_classes=4,
        backbone={},
        classifier=torch.zeros(4, 32),
        step=3,
        training={},
    ).write(checkpoint_path(run, 3))
    before = snapshot(run)
    recipe = tiny_recipe_file(tmp_path, data, run)
    code, out = invoke(str(recipe), "--resume")
    assert code == 2 and "'model.network' is 'r18' but the recipe asks for 'mbf'" in out
    assert snapshot(run) == before


def test_launcher_options_are_checked(tiny_recipe_file, tmp_path, data):
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run")
    code, out = invoke(str(recipe), "--nnodes", "2")
    assert code == 2 and "--rdzv-endpoint" in out
    code, out = invoke(str(recipe), "--nproc-per-node", "2", "--set", "head.num_classes=9")
    assert code == 2 and "head.num_classes is 9" in out  # checked in the parent, before any worker starts


def test_bad_recipe_key(tiny_recipe_file, tmp_path, data):
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run")
    code, out = invoke(str(recipe), "--set", "optim.lr=fast")
    assert code == 2 and "optim.lr" in out


@pytest.mark.parametrize(
    "name", ["ms1mv2_r50", "ms1mv2_r100", "ms1mv2_r200", "glint360k_r50", "glint360k_r100", "glint360k_r200"]
)
def test_reference_recipes_ask_for_the_data_path(name):
    code, out = invoke(name)  # the packaged recipe, by name
    assert code == 2 and "set data.path" in out


def test_train_prints_verification_next_to_the_pixel_baseline(make_tiny_dataset, tiny_recipe_file, tmp_path):
    data = make_tiny_dataset(tmp_path / "data", classes=4, per_class=4, pairs=20)
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("from an earlier run")
    (run / "train.log").write_text("an earlier run\n")  # what makes it a run topofr wrote
    recipe = tiny_recipe_file(tmp_path, data, run)
    code, out = invoke(str(recipe), "--set", "schedule.max_steps=2", "--overwrite")
    assert code == 0, out
    assert "Verification after 2 steps" in out and "raw-pixel baseline" in out and "val" in out
    assert not (run / "old.txt").exists()  # --overwrite replaced the directory
    assert {p.name for p in run.iterdir()} >= {"recipe.yaml", "metrics.csv", "checkpoints"}
