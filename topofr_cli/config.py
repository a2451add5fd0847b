"""Training recipes: typed dataclasses, YAML loading, `--set section.key=value` overrides.

A recipe is a YAML mapping whose top-level sections mirror the dataclasses below. Every key is
checked: an unknown key, a value of the wrong type, or a number outside the range its field declares
(`ranged`) is a TopofrError naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from topofr_cli import strict_yaml
from topofr_cli.devices import DEVICE_NAMES, is_device_name
from topofr_cli.errors import TopofrError

_SEED_MAX = 2**63 - 1
_COUNT_MAX = 10**12  # steps and intervals: far beyond any real run, and no overflow in step arithmetic


@dataclass(frozen=True)
class Range:
    """Closed interval unless an end is open; NaN is never inside."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return bool(above and value <= self.high)

    def __str__(self) -> str:
        low, high = (f"{end:g}" if isinstance(end, float) else str(end) for end in (self.low, self.high))
        return f"{'(' if self.low_open else '['}{low}, {high}]"


def ranged(default: Any, low: float, high: float, *, low_open: bool = False) -> Any:
    """A numeric field with its valid range, checked whenever a recipe sets it."""
    return field(default=default, metadata={"range": Range(low, high, low_open)})


@dataclass
class SyntheticSpec:
    """How to generate the synthetic set when `data.path` does not exist yet."""

    identities: int = ranged(200, 1, 10**7)
    images_per_identity: int = ranged(20, 2, 10**5)
    heldout_identities: int = ranged(100, 2, 10**7)
    pairs: int = ranged(600, 20, 10**8)
    seed: int = ranged(0, 0, _SEED_MAX)


@dataclass
class DataConfig:
    path: str | None = None  # packed dir, RecordIO folder/prefix, or image folder
    synthetic: SyntheticSpec | None = None  # generate the synthetic set at `path` if missing
    val_bins: list[str] = field(default_factory=list)  # extra .bin files for periodic verification
    num_workers: int = ranged(2, 0, 1024)
    batch_size: int = ranged(128, 1, 2**20)  # per process
    horizontal_flip: bool = True


@dataclass
class ModelConfig:
    network: str = "r50"  # r18, r34, r50, r100, r200, mbf
    embedding_size: int = ranged(512, 1, 2**16)
    channels_last: bool = True
    gradient_checkpointing: bool = False
    dropout: float = ranged(0.0, 0.0, 0.99)


@dataclass
class HeadConfig:
    """Combined margin cos(m1·θ + m2) − m3, scaled by s (docs/method.md §1.3: s = 64, m2 = 0.5)."""

    scale: float = ranged(64.0, 0.0, 1e4, low_open=True)
    m1: float = ranged(1.0, 0.0, 10.0)
    m2: float = ranged(0.5, 0.0, math.pi)
    m3: float = ranged(0.0, 0.0, 2.0)
    sample_rate: float = ranged(1.0, 0.0, 1.0, low_open=True)  # Partial FC negative-class sampling rate
    num_classes: int | None = ranged(None, 1, 2**31 - 1)  # None: read from the dataset


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = ranged(0.1, 0.0, 1e6, low_open=True)
    momentum: float = ranged(0.9, 0.0, 1.0)
    weight_decay: float = ranged(5e-4, 0.0, 1.0)
    clip_grad_norm: float | None = ranged(5.0, 0.0, 1e12, low_open=True)  # backbone only
    # the backbone's lr is optim.lr × this (fine-tuning: docs/method.md, Fine-tuning); 0 trains the head only
    backbone_lr_multiplier: float = ranged(1.0, 0.0, 1e3)


@dataclass
class ScheduleConfig:
    epochs: int = ranged(30, 1, 10**6)
    warmup_epochs: float = ranged(0.0, 0.0, 1e6)
    power: float = ranged(2.0, 0.0, 100.0)  # polynomial decay
    max_steps: int | None = ranged(
        None, 1, _COUNT_MAX
    )  # stop early (smoke runs); the schedule still spans `epochs`


@dataclass
class PTSAConfig:
    enabled: bool = True
    form: Literal["official", "symmetric"] = "official"
    alpha: float = ranged(0.1, 0.0, 1e6)
    scope: Literal["local", "global"] = "local"
    # fixed mode learns λ; at the backbone's lr (and momentum) SGD overshoots it by orders of magnitude
    # within a few steps (its early gradient is ~100× the backbone's), after which PTSA is inert
    scale_lr_multiplier: float = ranged(0.01, 0.0, 1e6)


@dataclass
class RSPConfig:
    enabled: bool = True
    prob: float = ranged(0.2, 0.0, 1.0)


@dataclass
class SDEConfig:
    enabled: bool = True
    temperature: float = ranged(1.0, 0.0, 1e6, low_open=True)


@dataclass
class TopoFRConfig:
    """The paper's three mechanisms (docs/method.md §1). Off as a whole gives plain ArcFace."""

    enabled: bool = False
    # fixed: this project's arithmetic; reference: the reference implementation's (docs/method.md §2)
    compat: Literal["fixed", "reference"] = "fixed"
    ptsa: PTSAConfig = field(default_factory=PTSAConfig)
    rsp: RSPConfig = field(default_factory=RSPConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)


@dataclass
class TrainConfig:
    output: str = "runs/default"
    seed: int = ranged(0, 0, _SEED_MAX)
    deterministic: bool = False
    precision: Literal["fp32", "fp16", "bf16"] = "bf16"
    compile: bool = False
    device: str = "auto"  # auto, cpu, cuda or cuda:N (topofr_cli.devices)
    _: KW_ONLY  # at most six fields by position
    log_every: int = ranged(10, 1, _COUNT_MAX)
    save_every: int = ranged(1000, 0, _COUNT_MAX)  # 0: only at epoch ends and the end
    eval_every: int = ranged(
        0, 0, _COUNT_MAX
    )  # steps between periodic verifications (0: none besides the epoch ends)
    eval_at_epoch_end: bool = True  # verify at each epoch end (always once more at the end of training)
    max_bad_steps: int = ranged(20, 1, _COUNT_MAX)  # consecutive non-finite losses before training stops
    # fine-tuning (docs/method.md, Fine-tuning): the model file whose backbone starts the run (`--init`)
    init: str | None = None
    init_sha256: str | None = None  # filled in by the run; when set, the init file must have this digest
    init_keep_objective: bool = False  # keep a TopoFR checkpoint's λ / objective state instead of fresh
    freeze_backbone_steps: int = ranged(0, 0, _COUNT_MAX)  # first N steps train the new head only
    batchnorm: Literal["update", "frozen"] = "update"  # frozen: BatchNorm statistics stay as loaded


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    topofr: TopoFRConfig = field(default_factory=TopoFRConfig)
    _: KW_ONLY  # at most six fields by position
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 4, 4, 80, 80


def _show(value: Any) -> str:
    """A value for an error message, cut short (YAML aliases can make a small file a huge value)."""
    return _SHORT.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; build nested dataclasses from mappings."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, source)
            except TopofrError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(errors) == 1
            else TopofrError(f"{source}: key '{key}' expects {_type_name(tp)}, got {_show(value)}")
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(map(str, typing.get_args(tp)))
            raise TopofrError(f"{source}: key '{key}' must be one of {allowed}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise TopofrError(f"{source}: key '{key}' expects a list, got {_show(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TopofrError(f"{source}: section '{key}' expects a mapping, got {_show(value)}")
        return _build(tp, value, key, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise TopofrError(f"{source}: key '{key}' expects true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():  # 1e4 written for an integer
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TopofrError(f"{source}: key '{key}' expects an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TopofrError(f"{source}: key '{key}' expects a number, got {_show(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            raise TopofrError(f"{source}: key '{key}' is too large a number ({_show(value)})") from None
    if tp is str:
        if not isinstance(value, str):
            raise TopofrError(f"{source}: key '{key}' expects a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls: type, mapping: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise TopofrError(
                f"{source}: unknown key '{_show(dotted)[1:-1]}' (known: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _convert(value, hints[key], dotted, source)
        valid = fields[key].metadata.get("range")
        if valid is not None and kwargs[key] is not None and kwargs[key] not in valid:
            raise TopofrError(f"{source}: key '{dotted}' must be in {valid}, got {kwargs[key]}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:  # an optional section that is off (None) is switched on by setting a key
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TopofrError(f"{source}: '{dotted}' goes through '{part}', which is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value` → (dotted key, YAML-parsed value)."""
    if "=" not in text:
        raise TopofrError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise TopofrError(f"--set {text!r}: empty key")
    try:
        value = strict_yaml.load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def recipe_from_dict(tree: dict[str, Any], source: str = "<recipe>") -> Recipe:
    if not isinstance(tree, dict):  # e.g. a checkpoint's stored recipe, damaged
        raise TopofrError(f"{source}: a recipe must be a mapping of sections, got {_show(tree)}")
    recipe = _build(Recipe, tree, "", source)
    _refuse_nul(recipe.to_dict(), source)
    if not is_device_name(recipe.train.device):
        raise TopofrError(
            f"{source}: key 'train.device' must be one of {DEVICE_NAMES}, got {_show(recipe.train.device)}"
        )
    return recipe


def _refuse_nul(tree: dict[str, Any], source: str, prefix: str = "") -> None:
    """A NUL character cannot be in a path or a name the OS accepts (os calls raise ValueError)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _refuse_nul(value, source, f"{prefix}{key}.")
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and "\x00" in text:
                raise TopofrError(f"{source}: key '{prefix}{key}' contains a NUL character")


def _check_values(recipe: Recipe) -> None:
    """Values the types cannot express; the recipe key names live here, not in the maths or models."""
    from topofr_cli.models import BACKBONE_NAMES  # deferred: the recipe schema does not need torch

    if recipe.model.network not in BACKBONE_NAMES:
        raise TopofrError(
            f"model.network: unknown backbone {recipe.model.network!r}; valid names: "
            f"{', '.join(BACKBONE_NAMES)}"
        )
    if not 0.0 <= recipe.topofr.rsp.prob <= 1.0:
        raise TopofrError(f"topofr.rsp.prob: expected a probability in [0, 1], got {recipe.topofr.rsp.prob}")


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or the defaults when `path` is None) and apply `--set` overrides."""
    tree: dict[str, Any] = {}
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TopofrError(f"{path}: recipe file not found")
        try:
            loaded = strict_yaml.load(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TopofrError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise TopofrError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise TopofrError(f"{path}: not valid YAML ({strict_yaml.describe(exc)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise TopofrError(f"{path}: a recipe must be a mapping of sections")
        tree = loaded
    recipe = recipe_from_dict(tree, source)
    for text in overrides or []:
        key, value = parse_override(text)
        merged = recipe.to_dict()
        _set_dotted(merged, key, value, f"--set {key}")
        recipe = recipe_from_dict(merged, f"--set {key} (recipe {source})")
    _check_values(recipe)
    return recipe


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML text that `load_recipe` reads back equal (written by artifacts.run_dir)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
