"""Recipe values outside their declared range, YAML 1.2 floats, duplicate keys, deep nesting, bad bytes."""

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from topofr_cli.config import Range, Recipe, load_recipe
from topofr_cli.errors import TopofrError


def _numeric_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        inner = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
        if dataclasses.is_dataclass(inner[0]):
            yield from _numeric_fields(inner[0], f"{prefix}{f.name}.")
        elif inner[0] in (int, float):
            yield f"{prefix}{f.name}", f


def test_every_numeric_field_declares_a_range_that_holds_its_default():
    found = list(_numeric_fields(Recipe))
    assert len(found) >= 25
    for name, f in found:
        valid = f.metadata.get("range")
        assert isinstance(valid, Range), f"{name} has no declared range"
        assert f.default is None or f.default in valid, name


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("data.batch_size=0", "key 'data.batch_size' must be in [1, 1048576], got 0"),
        ("train.log_every=0", "key 'train.log_every' must be in [1, "),
        ("schedule.epochs=0", "key 'schedule.epochs' must be in [1, 1000000], got 0"),
        ("optim.lr=.nan", "key 'optim.lr' must be in (0, 1e+06], got nan"),
        ("optim.lr=-.inf", "key 'optim.lr' must be in (0, 1e+06], got -inf"),
        ("optim.lr=0", "key 'optim.lr' must be in (0, 1e+06], got 0.0"),
        ("train.max_bad_steps=0", "key 'train.max_bad_steps' must be in [1, "),
        ("topofr.rsp.prob=1.5", "key 'topofr.rsp.prob' must be in [0, 1], got 1.5"),
        ("head.sample_rate=0", "key 'head.sample_rate' must be in (0, 1], got 0.0"),
        ("data.num_workers=-1", "key 'data.num_workers' must be in [0, 1024], got -1"),
        ("optim.lr=1" + "0" * 400, "key 'optim.lr' is too large a number"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key_and_range(override, fragment):
    with pytest.raises(TopofrError) as info:
        load_recipe(None, [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_range_checked_in_a_recipe_file_too(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  batch_size: 0\n")
    with pytest.raises(
        TopofrError, match=r"r\.yaml: key 'data\.batch_size' must be in \[1, 1048576\], got 0"
    ):
        load_recipe(path)


def test_scientific_notation_is_a_number():
    recipe = load_recipe(
        None,
        ["optim.lr=1e-3", "optim.weight_decay=5E-4", "schedule.max_steps=1e4", "topofr.ptsa.alpha=2.5e+1"],
    )
    assert recipe.optim.lr == 0.001 and recipe.optim.weight_decay == 0.0005
    assert recipe.schedule.max_steps == 10000 and isinstance(recipe.schedule.max_steps, int)
    assert recipe.topofr.ptsa.alpha == 25.0
    with pytest.raises(TopofrError, match="key 'schedule.max_steps' expects an integer, got 2.5"):
        load_recipe(None, ["schedule.max_steps=2.5e0"])


def test_strings_that_only_look_numeric_stay_strings():
    assert load_recipe(None, ["data.path=1.2.3"]).data.path == "1.2.3"
    assert load_recipe(None, ["data.path=."]).data.path == "."


def _load_text(tmp_path: Path, content: bytes | str):
    path = tmp_path / "r.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TopofrError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_duplicate_keys_are_an_error(tmp_path):
    message = _load_text(tmp_path, "optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    assert "line 4: key 'lr' given twice" in message
    assert "line 3: key 'optim' given twice" in _load_text(tmp_path, "optim: {}\ndata: {}\noptim: {}\n")


def test_deep_nesting_is_bounded(tmp_path):
    assert "nested deeper than 64 levels" in _load_text(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper than 64 levels" in _load_text(
        tmp_path, "".join(f"{' ' * i}k{i}:\n" for i in range(200))
    )


def test_non_utf8_recipe(tmp_path):
    assert "not UTF-8 text (byte 17)" in _load_text(tmp_path, b"data:\n  path: caf\xe9\n")


def test_alias_bomb_is_reported_briefly(tmp_path):
    """Nine levels of ten aliases: 10**9 strings if expanded; the message must not expand them."""
    levels = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    message = _load_text(tmp_path, "data: {path: [" + ", ".join(levels) + ", *a8]}\n")
    assert "key 'data.path' expects a string, got [[" in message and len(message) < 800


def test_float_range_holds_math_pi_for_m2():
    assert load_recipe(None, [f"head.m2={math.pi}"]).head.m2 == math.pi
