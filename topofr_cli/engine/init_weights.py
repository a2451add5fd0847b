"""`train.init` (`topofr train --init MODEL`): the trained backbone a fine-tuning run starts from.

Any file `topofr eval` loads that holds trainable weights will do: a topofr checkpoint, the reference
implementation's `model.pt`, an insightface arcface_torch backbone `.pth`, a plain state dict. They are
read by the evaluator's own loader (`evaluation.model_io.load_model`), so a fine-tune starts from
exactly the weights `topofr eval` scores. Only the backbone is taken: the classifier is new, sized for
the new data's classes, and λ and the objective's state start fresh unless `train.init_keep_objective`
asks to keep a TopoFR checkpoint's (docs/method.md, Fine-tuning).

Everything here runs before a run writes anything, so a mismatch is one line and leaves no run folder.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    is_checkpoint_payload,
    list_checkpoints,
    load_weights_file,
)
from topofr_cli.artifacts.digest import file_sha256
from topofr_cli.config import Recipe, load_recipe
from topofr_cli.errors import TopofrError
from topofr_cli.models.iresnet import stage_depths_of, strip_ddp_prefix
from topofr_cli.models.mobilefacenet import is_mobilefacenet_state

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(kw_only=True)
class InitWeights:
    """The backbone (our key names) a run starts from, and where it came from."""

    path: Path
    sha256: str
    kind: str  # as load_model says: topofr-checkpoint, reference, insightface
    network: str
    embedding_size: int
    backbone: dict[str, torch.Tensor]
    objective: dict[str, torch.Tensor] | None = None  # kept λ / objective state, when asked for
    step: int | None = None  # the checkpoint's step, for a topofr checkpoint

    def describe(self) -> str:
        """One line for the banner and train.log."""
        origin = f"{self.kind}" + (f" at step {self.step}" if self.step is not None else "")
        kept = "kept from the checkpoint" if self.objective is not None else "fresh"
        return (
            f"initialised from {self.path} (sha256 {self.sha256}; {origin}, {self.network}, "
            f"embedding {self.embedding_size}): backbone loaded, new classifier, objective state {kept}"
        )

    def load_into(self, backbone: torch.nn.Module, objective: torch.nn.Module) -> None:
        """Copy the weights into the training's backbone (and the kept objective state, if any)."""
        backbone.load_state_dict(self.backbone, strict=True)
        if self.objective is not None:
            objective.load_state_dict(self.objective, strict=True)


@dataclass(kw_only=True)
class InitPlan:
    """What `train.init` means for this run: the recipe with the file's digest recorded, the weights
    to load (None without train.init, or when resuming) and notes for the user."""

    recipe: Recipe
    weights: InitWeights | None = None
    notes: list[str] = field(default_factory=list)


def plan_init(recipe: Recipe, *, resume: bool) -> InitPlan:
    """Check `train.init` against the recipe and read its weights; raises TopofrError, writes nothing."""
    train = recipe.train
    if train.init is None:
        if train.init_keep_objective:
            raise TopofrError("train.init_keep_objective is set but train.init names no model file")
        if train.init_sha256 is not None:
            raise TopofrError("train.init_sha256 is set but train.init names no model file")
        return InitPlan(recipe=recipe)
    if resume:
        return _resume_plan(recipe)
    path = Path(train.init)
    if not path.is_file():
        raise TopofrError(f"{path}: train.init (--init) model file not found")
    sha256 = _checked_digest(path, train.init_sha256)
    weights = _read_backbone(path, sha256, recipe)
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(train, init_sha256=sha256))
    return InitPlan(recipe=recipe, weights=weights)


def _checked_digest(path: Path, expected: str | None) -> str:
    if expected is not None and not _SHA256.match(expected):
        raise TopofrError(f"train.init_sha256: expected 64 lowercase hex digits, got {expected[:80]!r}")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise TopofrError(f"{path}: cannot read the train.init file ({exc.strerror or exc})") from None
    if expected is not None and digest != expected:
        raise TopofrError(
            f"{path}: sha256 {digest} differs from the recipe's train.init_sha256 {expected} (not the "
            "weights this recipe was written for; drop train.init_sha256 to start from this file anyway)"
        )
    return digest


def _resume_plan(recipe: Recipe) -> InitPlan:
    """`--resume` wins over train.init when the run folder has checkpoints (they hold the fine-tuned
    weights); without any, the combination is refused. The run's own record of its init is kept."""
    run_dir = Path(recipe.train.output)
    if not list_checkpoints(run_dir):
        raise TopofrError(
            f"{run_dir}: --resume with train.init {recipe.train.init}, but the run folder holds no "
            "checkpoint to resume (--resume wins only over a run that has checkpoints); drop --resume "
            "to start the fine-tune"
        )
    notes = [
        f"resuming {run_dir} from its checkpoints; train.init {recipe.train.init} is not loaded again "
        "(--resume wins over --init once a run has checkpoints)"
    ]
    try:
        recorded = load_recipe(run_dir / "recipe.yaml").train
    except TopofrError:  # no readable record of how the run started: keep what the recipe says
        return InitPlan(recipe=recipe, notes=notes)
    if recorded.init is None:  # recording a file the run did not start from would be false
        notes.append(f"{run_dir} did not start from a model file; train.init is left out of its record")
    elif recorded.init != recipe.train.init:
        notes.append(f"this run started from {recorded.init}, not {recipe.train.init}; its record is kept")
    train = dataclasses.replace(
        recipe.train,
        init=recorded.init,
        init_sha256=recorded.init_sha256,
        init_keep_objective=recorded.init_keep_objective,
    )
    return InitPlan(recipe=dataclasses.replace(recipe, train=train), notes=notes)


def _read_backbone(path: Path, sha256: str, recipe: Recipe) -> InitWeights:
    from topofr_cli.evaluation.model_io import load_model

    if path.suffix.lower() == ".onnx":
        raise TopofrError(f"{path}: an ONNX model holds no trainable weights; start from a .pt or .pth file")
    try:
        loaded = load_model(path)
    except TopofrError:
        _refuse_if_no_backbone(path)
        raise
    _check_fits(path, loaded.network, loaded.embedding_size, recipe)
    return InitWeights(
        path=path,
        sha256=sha256,
        kind=loaded.kind,
        network=loaded.network,
        embedding_size=loaded.embedding_size,
        backbone={k: v.detach().clone() for k, v in loaded.backbone.state_dict().items()},
        objective=_kept_objective(path, loaded.kind, recipe),
        step=loaded.step,
    )


def _refuse_if_no_backbone(path: Path) -> None:
    """The loader refused the file: say so plainly when it is because it holds no backbone at all."""
    payload = load_weights_file(path)
    if is_checkpoint_payload(payload):
        backbone = payload.get("backbone")
        if not isinstance(backbone, dict) or not backbone:
            raise TopofrError(f"{path}: a topofr checkpoint that holds no backbone weights")
        return
    if not isinstance(payload, dict):
        raise TopofrError(f"{path}: holds a {type(payload).__name__}, not backbone weights")
    state = strip_ddp_prefix({k: v for k, v in payload.items() if isinstance(k, str)})
    if not any(stage_depths_of(state)) and not is_mobilefacenet_state(state):
        raise TopofrError(
            f"{path}: holds no backbone (none of its {len(payload)} entries is an IResNet layer1…4 or "
            "MobileFaceNet weight: a classifier, an optimizer or another model's file?)"
        )


def _check_fits(path: Path, network: str, embedding_size: int, recipe: Recipe) -> None:
    model = recipe.model
    if network != model.network:
        raise TopofrError(
            f"{path}: holds a {network} backbone but the recipe's model.network is {model.network} "
            f"(add --set model.network={network})"
        )
    if embedding_size != model.embedding_size:
        raise TopofrError(
            f"{path}: its {network} backbone gives {embedding_size}-d embeddings but the recipe's "
            f"model.embedding_size is {model.embedding_size} (add --set model.embedding_size={embedding_size})"
        )


def _kept_objective(path: Path, kind: str, recipe: Recipe) -> dict[str, torch.Tensor] | None:
    """The checkpoint's objective state when `train.init_keep_objective` asks for it (None otherwise)."""
    if not recipe.train.init_keep_objective:
        return None
    if kind != CHECKPOINT_FORMAT:
        raise TopofrError(
            f"{path}: train.init_keep_objective needs a topofr checkpoint of a TopoFR run; this is a "
            f"{kind} file, which holds no objective state (drop the key: λ then starts fresh)"
        )
    checkpoint = Checkpoint.read(path)
    if not recipe.topofr.enabled or not checkpoint.objective:
        which = "the recipe has topofr.enabled false" if not recipe.topofr.enabled else "it holds none"
        raise TopofrError(
            f"{path}: train.init_keep_objective asks for the checkpoint's objective state (λ), but {which}"
        )
    return dict(checkpoint.objective)
