"""Packaged recipes: a bare name, `NAME.yaml` or `recipes/NAME.yaml` finds the recipe installed with the
package; a file on disk wins; `--print-config` shows the resolved recipe; paths inside a recipe stay
relative to the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.errors import TopofrError
from topofr_cli.recipes import PACKAGED_DIR, packaged_recipes, resolve_recipe

runner = CliRunner()
EXPECTED = {
    "quickstart",
    "quickstart_topofr",
    "ms1mv2_r50",
    "ms1mv2_r100",
    "ms1mv2_r200",
    "glint360k_r50",
    "glint360k_r100",
    "glint360k_r200",
    "finetune_quickstart",
    "finetune",
}


def test_every_recipe_ships_inside_the_package():
    assert set(packaged_recipes()) == EXPECTED
    assert PACKAGED_DIR.parent.name == "topofr_cli"


@pytest.mark.parametrize("text", ["quickstart", "quickstart.yaml", "recipes/quickstart.yaml"])
def test_names_resolve_to_the_packaged_recipe_from_an_empty_folder(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(text) == PACKAGED_DIR / "quickstart.yaml"


def test_a_file_on_disk_wins_over_the_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("quickstart.yaml").write_text("model: {network: r18}\n")
    assert resolve_recipe("quickstart.yaml") == Path("quickstart.yaml")


@pytest.mark.parametrize("text", ["nosuch", "elsewhere/quickstart.yaml", "quickstart.yml"])
def test_unknown_recipe_names_the_packaged_ones(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        TopofrError,
        match=r"recipe file not found \((did you mean \w+\? )?packaged recipes: finetune, finetune_quickstart, glint360k_r100, .*quickstart",
    ):
        resolve_recipe(text)


@pytest.mark.parametrize(
    "typo, meant",
    [("quikstart", "quickstart"), ("quickstart_topfr", "quickstart_topofr"), ("ms1mv2_r05", "ms1mv2_r50")],
)
def test_a_typo_gets_did_you_mean(typo, meant, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from topofr_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", typo])
    assert result.exit_code == 2 and not any(tmp_path.iterdir())
    assert result.output.startswith(f"error: {typo}: recipe file not found (did you mean {meant}? packaged")


def test_no_suggestion_for_a_name_like_none_of_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TopofrError) as caught:
        resolve_recipe("zzz")
    assert "did you mean" not in str(caught.value)


def test_a_directory_is_not_a_recipe(tmp_path):
    with pytest.raises(TopofrError, match="not a directory"):
        resolve_recipe(tmp_path)


def test_print_config_shows_the_resolved_recipe_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "quickstart", "--print-config", "--set", "schedule.epochs=1"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    written = yaml.safe_load((PACKAGED_DIR / "quickstart.yaml").read_text())
    assert shown["schedule"]["epochs"] == 1  # the override
    assert shown["data"]["path"] == written["data"]["path"] == "data/quickstart_synthetic"
    assert shown["model"]["network"] == written["model"]["network"]
    assert shown["head"]["m3"] == written["head"]["m3"]
    assert shown["topofr"]["enabled"] is False  # a default the file leaves out
    assert list(tmp_path.iterdir()) == []


def test_print_config_without_a_recipe_shows_the_defaults():
    result = runner.invoke(app, ["train", "--print-config"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["model"]["network"] == "r50"


def test_train_without_a_recipe_is_one_line():
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2
    assert "name a RECIPE" in result.output and "quickstart" in result.output


@pytest.mark.slow
def test_packaged_quickstart_runs_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = [
        "data.synthetic.identities=4",
        "data.synthetic.images_per_identity=3",
        "data.synthetic.heldout_identities=4",
        "data.synthetic.pairs=20",
        "data.batch_size=4",
        "data.num_workers=0",
        "schedule.max_steps=2",
    ]
    args = ["train", "quickstart"] + [part for item in small for part in ("--set", item)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # data.path and train.output are relative to the current directory, not to the installed recipe
    assert (tmp_path / "data" / "quickstart_synthetic" / "meta.json").is_file()
    assert (tmp_path / "runs" / "quickstart" / "checkpoints" / "step_00000002.pt").is_file()
    assert not (PACKAGED_DIR / "data").exists()
