"""The training checkpoint: one typed object, one file format, one place that reads and writes it.

File layout (docs/interfaces.md, Artifacts): a plain dict of tensors and Python primitives, so that
`torch.load(weights_only=True)` reads it without running arbitrary code.

  format "topofr-checkpoint", version 2, topofr_version
  model {network, embedding_size, num_classes}, recipe (the run's recipe as a dict), step, epoch
  backbone (state dict), classifier ([C, E], every rank's shard merged)
  objective    the objective's exact state (TopoFR's λ as `ptsa.log_scale`; {} for plain runs)
  training     what only a resume needs (absent in a weights-only file): optimizers, scaler, world
               size, per-rank RNG states and each training-loop hook's own state under `hooks`

`checksum` {algorithm: "sha256", digest} is the digest of everything else in the payload
(artifacts/digest.py), verified on every read; files written before it existed have none and are read
unchecked. A checkpoint whose weights hold a NaN or an infinity is never written.

Version 1 files (no `version` key) stored λ twice, as a float `latent_scale` and inside
`training.objective`, and the loop's counters flat in `training`; they are read into the same object.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from topofr_cli import __version__
from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.artifacts.digest import ALGORITHM, content_digest
from topofr_cli.config import Recipe, recipe_from_dict
from topofr_cli.errors import TopofrError

CHECKPOINT_FORMAT = "topofr-checkpoint"
CHECKPOINT_VERSION = 2
CHECKPOINT_DIR = "checkpoints"
# the objective state key that holds log λ (engine/topofr_objective.py → topology/ptsa.py `log_scale`)
LATENT_LOG_SCALE_KEY = "ptsa.log_scale"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoints/step_XXXXXXXX.pt` of a run, by step (not by name)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _first_line(exc: BaseException) -> str:
    """The line of an exception that says what is wrong. torch's refusals open with advice to retry
    with `weights_only=False`, which would run the file's code: those lines are never shown."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not _TORCH_ADVICE.search(line)]
    if said:
        return said[0]
    return "it asks for objects a weights-only load forbids" if lines else type(exc).__name__


_TORCH_ADVICE = re.compile(r"weights_only|trusted source|documentation of torch\.load", re.IGNORECASE)


def first_non_finite(tensors: Any, prefix: str = "") -> str | None:
    """Dotted name of the first floating tensor holding a NaN or an infinity, searching nested
    mappings and sequences; None when every one is finite."""
    if isinstance(tensors, torch.Tensor):
        finite = not tensors.is_floating_point() or bool(tensors.isfinite().all())
        return None if finite else prefix
    if isinstance(tensors, dict):
        items = tensors.items()
    elif isinstance(tensors, (list, tuple)):
        items = enumerate(tensors)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def refuse_non_finite(tensors: Any, path: Path) -> None:
    """TopofrError naming the file and the first non-finite tensor: a model with NaN or infinite
    weights gives meaningless embeddings (and numbers that look like results)."""
    name = first_non_finite(tensors)
    if name is not None:
        raise TopofrError(
            f"{path}: refused: weight '{name}' holds non-finite values (NaN or infinity); "
            "such a model cannot give meaningful results"
        )


def load_weights_file(path: str | Path, *, mmap: bool = False) -> Any:
    """Any PyTorch file, read with `weights_only=True` (a foreign model file, the reference's model.pt, ours).

    A refused or unreadable file is one TopofrError line naming it.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise TopofrError(
            f"{path}: refused or unreadable with torch.load(weights_only=True) ({_first_line(exc)})"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise TopofrError(f"{path}: not a PyTorch model file ({_first_line(exc)})") from None


def _verify_checksum(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """The payload without its checksum, once the checksum matches (a payload without one is returned as is)."""
    if "checksum" not in payload:
        return payload
    content = {key: value for key, value in payload.items() if key != "checksum"}
    stored = payload["checksum"]
    if (
        not isinstance(stored, dict)
        or stored.get("algorithm") != ALGORITHM
        or not isinstance(stored.get("digest"), str)
    ):
        raise TopofrError(f"{path}: damaged checkpoint (its 'checksum' entry is malformed)")
    try:
        digest = content_digest(content)
    except (RuntimeError, TypeError, ValueError) as exc:  # a tensor kind no checkpoint of ours holds
        raise TopofrError(
            f"{path}: damaged checkpoint (its content cannot be checksummed: {_first_line(exc)})"
        ) from None
    if digest != stored["digest"]:
        raise TopofrError(
            f"{path}: damaged checkpoint (its content does not match the {ALGORITHM} checksum stored in it)"
        )
    return content


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-1 payload in the version-2 layout (hook states under training.hooks)."""
    payload = dict(payload)
    training = dict(payload.get("training") or {}) if "training" in payload else None
    objective = training.pop("objective", None) if training is not None else None
    payload["objective"] = objective or {}  # `latent_scale` stays: a weights-only v1 file has λ only there
    if training is not None and "position" in training:
        position = training.pop("position")
        training["hooks"] = {
            "loop": {
                "step": int(payload.get("step", 0)),
                "epoch": int(position["epoch"]),
                "batch_in_epoch": int(position["batch_in_epoch"]),
            },
            "metrics": {"bad_steps": int(training.pop("bad_steps", 0))},
            "stopping": {"consecutive_bad": int(training.pop("consecutive_bad", 0))},
        }
    if training is not None:
        payload["training"] = training
    return payload


@dataclass(kw_only=True)
class Checkpoint:
    """A training checkpoint (read with `read`, written with `write`); `training` is None for weights only."""

    network: str | None
    embedding_size: int | None
    num_classes: int | None
    backbone: dict[str, torch.Tensor] | None
    classifier: torch.Tensor | None
    step: int | None = None
    epoch: int | None = None
    recipe: Recipe | None = None
    objective: dict[str, torch.Tensor] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    topofr_version: str = __version__
    path: Path | None = None  # where it was read from
    # λ of a TopoFR run with a learned scale (None for plain runs and the reference's constant 1): derived from
    # `objective`, never written; only version-1 files without objective state give it directly
    latent_scale: float | None = None

    def __post_init__(self) -> None:
        log_scale = self.objective.get(LATENT_LOG_SCALE_KEY)
        if self.latent_scale is None and log_scale is not None:
            self.latent_scale = float(log_scale.exp())  # as the objective computes it (float32)

    def hook_state(self, name: str) -> dict[str, Any] | None:
        """The state a training-loop hook saved (None when it saved none, e.g. in older files)."""
        return ((self.training or {}).get("hooks") or {}).get(name)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "topofr_version": self.topofr_version,
            "model": {
                "network": self.network,
                "embedding_size": self.embedding_size,
                "num_classes": self.num_classes,
            },
            "recipe": None if self.recipe is None else self.recipe.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "backbone": self.backbone,
            "classifier": self.classifier,
            "objective": self.objective,
        }
        if self.training is not None:
            payload["training"] = self.training
        return payload

    def write(self, path: str | Path) -> Path:
        """Atomically, flushed to disk before the rename: a crash never leaves half a file. Refused (one
        TopofrError line) when a weight is not finite."""
        self.check_finite(path)
        payload = self.to_payload()
        payload["checksum"] = {"algorithm": ALGORITHM, "digest": content_digest(payload)}
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as handle:
            torch.save(payload, handle)
        return Path(path)

    def check_finite(self, path: str | Path) -> None:
        """Raise TopofrError naming the first weight tensor that holds a NaN or an infinity."""
        groups = {
            "backbone": self.backbone or {},
            "objective": self.objective,
            "classifier": {"": self.classifier},
        }
        for group, tensors in groups.items():
            name = first_non_finite(tensors)
            if name is not None:
                where = f"{group}.{name}" if name else group
                raise TopofrError(
                    f"{path}: not written: '{where}' holds non-finite values at step {self.step} "
                    "(the run diverged; resume from an earlier checkpoint with a lower optim.lr)"
                )

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path) -> Checkpoint:
        """The checkpoint a loaded payload describes; TopofrError when its checksum does not match."""
        payload = _verify_checksum(payload, path)
        for key in ("model", "recipe", "objective", "training"):  # damaged or forged files: one clear line
            if payload.get(key) is not None and not isinstance(payload[key], dict):
                raise TopofrError(
                    f"{path}: key '{key}' holds a {type(payload[key]).__name__}, expected a mapping"
                )
        if (
            payload.get("latent_scale") is not None
            and not isinstance(payload["latent_scale"], (int, float))
            and not (
                isinstance(payload["latent_scale"], torch.Tensor) and payload["latent_scale"].numel() == 1
            )
        ):
            raise TopofrError(f"{path}: key 'latent_scale' is not a number")
        _check_counters(payload, path)
        if payload.get("version") is None:
            payload = _v1_to_v2(payload)
        refuse_non_finite(
            {group: payload.get(group) for group in ("backbone", "classifier", "objective")}, path
        )
        model = payload.get("model") or {}
        recipe = payload.get("recipe")
        return cls(
            network=model.get("network"),
            embedding_size=model.get("embedding_size"),
            num_classes=model.get("num_classes"),
            backbone=payload.get("backbone"),
            classifier=payload.get("classifier")
            if isinstance(payload.get("classifier"), torch.Tensor)
            else None,
            step=payload.get("step"),
            epoch=payload.get("epoch"),
            recipe=None if recipe is None else recipe_from_dict(recipe, f"{path} (its recipe)"),
            objective=dict(payload.get("objective") or {}),
            training=payload.get("training"),
            topofr_version=str(payload.get("topofr_version", "unknown")),
            path=path,
            latent_scale=None if payload.get("latent_scale") is None else float(payload["latent_scale"]),
        )

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise TopofrError(f"{path}: checkpoint not found")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
            raise TopofrError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
        if not is_checkpoint_payload(payload):
            raise TopofrError(f"{path}: not a topofr checkpoint (key 'format' is not {CHECKPOINT_FORMAT!r})")
        return cls.from_payload(payload, path)

    def check_resumable(self, *, network: str, embedding_size: int, num_classes: int) -> None:
        """Refuse to resume a run whose recipe describes another architecture than the checkpoint."""
        expected = {"network": network, "embedding_size": embedding_size, "num_classes": num_classes}
        have = {
            "network": self.network,
            "embedding_size": self.embedding_size,
            "num_classes": self.num_classes,
        }
        for key, want in expected.items():
            if have[key] != want:
                raise TopofrError(
                    f"{self.path}: checkpoint key 'model.{key}' is {have[key]!r} but the recipe "
                    f"asks for {want!r}"
                )
        if self.training is None:
            raise TopofrError(
                f"{self.path}: checkpoint has no 'training' state (weights only), cannot resume"
            )


def _check_counters(payload: dict[str, Any], path: Path) -> None:
    """`version` (absent in version 1) and `step`/`epoch` must be what topofr writes: a forged step
    of -5 or 1e300 would otherwise name checkpoint files and schedule the learning rate."""
    version = payload.get("version")
    if version is not None and not (type(version) is int and 2 <= version <= CHECKPOINT_VERSION):
        raise TopofrError(
            f"{path}: checkpoint 'version' is {str(version)[:40]!r}; this topofr reads version "
            f"{CHECKPOINT_VERSION} and files without one (a newer file needs a newer topofr)"
        )
    for key in ("step", "epoch"):
        value = payload.get(key)
        if value is not None and not (type(value) is int and 0 <= value < 1 << 62):
            raise TopofrError(f"{path}: checkpoint '{key}' is {str(value)[:40]!r}, expected a count >= 0")


def is_checkpoint_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT
