"""The recipe loader: defaults, YAML sections, --set overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from topofr_cli.config import Recipe, load_recipe, parse_override, recipe_from_dict, recipe_yaml
from topofr_cli.errors import TopofrError
from topofr_cli.recipes import PACKAGED_DIR

RECIPES = PACKAGED_DIR


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_and_sections(tmp_path):
    r = load_recipe(write(tmp_path, "model: {network: mbf}\noptim: {lr: 1}\n"))
    assert r.model.network == "mbf"
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)  # int promoted to float
    assert r.schedule.power == 2.0 and r.data.path is None


def test_overrides_parse_yaml_values_and_create_optional_sections(tmp_path):
    r = load_recipe(
        write(tmp_path, "{}"), ["optim.lr=0.5", "train.compile=true", "data.synthetic.identities=7"]
    )
    assert r.optim.lr == 0.5 and r.train.compile is True
    assert r.data.synthetic is not None and r.data.synthetic.identities == 7
    assert parse_override("data.path=/a=b") == ("data.path", "/a=b")


@pytest.mark.parametrize(
    ("text", "overrides", "fragment"),
    [
        ("model: {netwrk: r50}\n", [], "unknown key 'model.netwrk'"),
        ("optim: {lr: fast}\n", [], "key 'optim.lr' expects a number"),
        ("train: {precision: fp8}\n", [], "key 'train.precision' must be one of"),
        ("train: {deterministic: 1}\n", [], "key 'train.deterministic' expects true/false"),
        ("schedule: {epochs: 2.5}\n", [], "key 'schedule.epochs' expects an integer"),
        ("data: {val_bins: a.bin}\n", [], "key 'data.val_bins' expects a list"),
        ("model: r50\n", [], "section 'model' expects a mapping"),
        ("- a\n- b\n", [], "a recipe must be a mapping"),
        ("model: {network: [\n", [], "not valid YAML"),
        ("{}", ["optim.lr"], "expected section.key=value"),
        ("{}", ["optim.lr.x=1"], "goes through 'lr'"),
        ("{}", ["optim.nesterov=true"], "unknown key 'optim.nesterov'"),
    ],
)
def test_errors_are_one_line_and_name_the_key(tmp_path, text, overrides, fragment):
    path = write(tmp_path, text)
    with pytest.raises(TopofrError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert str(path) in message or message.startswith("--set")


def test_missing_file(tmp_path):
    with pytest.raises(TopofrError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_save_and_reload_round_trip(tmp_path):
    r = load_recipe(None, ["model.network=r18", "topofr.enabled=true", "topofr.ptsa.scope=global"])
    (tmp_path / "out.yaml").write_text(recipe_yaml(r))
    again = load_recipe(tmp_path / "out.yaml")
    assert again == r and isinstance(again, Recipe)
    assert recipe_from_dict(r.to_dict()) == r


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_shipped_recipes_load(name):
    r = load_recipe(RECIPES / name)
    assert r.model.network in {"r18", "r34", "r50", "r100", "r200", "mbf"}
