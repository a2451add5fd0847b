"""Load a face model from any of the files the ecosystem produces (see `load_model`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from topofr_cli.artifacts.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    is_checkpoint_payload,
    load_weights_file,
    refuse_non_finite,
)
from topofr_cli.config import Recipe
from topofr_cli.errors import TopofrError
from topofr_cli.models import (
    BACKBONE_NAMES,
    checkpoint_filter_fn,
    create_backbone,
    embedding_key,
    embedding_size_of,
)
from topofr_cli.models.iresnet import network_of as iresnet_network_of
from topofr_cli.models.iresnet import stage_depths_of, strip_ddp_prefix
from topofr_cli.models.mobilefacenet import is_mobilefacenet_state

ONNX_SUFFIXES = (".onnx",)
MAX_EMBEDDING_SIZE = 1 << 16


@dataclass(kw_only=True)
class LoadedModel:
    backbone: Any  # nn.Module in eval mode, or OnnxBackbone
    classifier_weight: torch.Tensor | None  # [C, E]
    network: str  # r18 … r200, mbf, or "onnx"
    embedding_size: int
    num_classes: int | None
    kind: str  # "topofr-checkpoint", "reference", "insightface", "onnx"
    recipe: Recipe | None
    step: int | None
    notes: list[str] = field(default_factory=list)  # e.g. "architecture inferred from the keys: r50"
    latent_scale: float | None = None  # TopoFR's learned λ (our checkpoints only)


def _refuse_non_finite_initializers(path: Path) -> None:
    """An ONNX model's weights (its initializers) must be finite, as a checkpoint's must."""
    import numpy as np
    from onnx import load, numpy_helper  # installed with onnxruntime (the onnx extra)

    for initializer in load(str(path)).graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            raise TopofrError(
                f"{path}: refused: weight '{initializer.name}' holds non-finite values (NaN or infinity); "
                "such a model cannot give meaningful results"
            )


class OnnxBackbone:
    """An ONNX face model behind the backbone call: float [B, 3, 112, 112] tensor → [B, E] tensor."""

    def __init__(self, path: str | Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TopofrError(
                f"{path}: running an ONNX model needs onnxruntime (pip install 'topofr[onnx]')"
            ) from None
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise TopofrError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        _refuse_non_finite_initializers(Path(path))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise TopofrError(f"{path}: expected one input, the model has {len(inputs)}")
        self.input_name = inputs[0].name
        self.path = Path(path)
        shape = self.session.get_outputs()[0].shape
        self.embedding_size = shape[-1] if isinstance(shape[-1], int) else None
        self.training = False

    def eval(self) -> OnnxBackbone:
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # onnxruntime works on host arrays; one copy per batch is unavoidable for this backend
        array = x.detach().to("cpu", torch.float32).numpy()
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})[:1]
        return torch.from_numpy(out).to(x.device)


def _is_onnx(path: Path) -> bool:
    return path.suffix.lower() in ONNX_SUFFIXES


def infer_network(state: dict[str, torch.Tensor], path: Path) -> str:
    """r18 … r200 from the number of blocks per stage, or mbf from its layer names."""
    if is_mobilefacenet_state(state):
        return "mbf"
    network = iresnet_network_of(state)
    if network is not None:
        return network
    depth = list(stage_depths_of(state))
    if any(depth):
        raise TopofrError(
            f"{path}: IResNet with {depth} blocks per stage matches no known network "
            f"({', '.join(BACKBONE_NAMES)}); pass --network"
        )
    raise TopofrError(
        f"{path}: cannot tell the architecture from the keys (no layer1…4 or mbf keys); pass --network"
    )


def build_backbone(
    state: dict[str, torch.Tensor], network: str, embedding_size: int, path: Path
) -> torch.nn.Module:
    """Create `network` and load `state` strictly; a mismatch names the file and the first keys."""
    if network not in BACKBONE_NAMES:
        raise TopofrError(f"{path}: unknown network {network!r}; valid: {', '.join(BACKBONE_NAMES)}")
    backbone = create_backbone(network, embedding_size)
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise TopofrError(f"{path}: weights do not fit {network} ({'; '.join(parts)})")
    backbone.load_state_dict(state, strict=True)
    return backbone.eval()


def _load_checkpoint(checkpoint: Checkpoint, path: Path, network: str | None) -> LoadedModel:
    state = checkpoint.backbone
    if not isinstance(state, dict) or checkpoint.network is None:
        raise TopofrError(f"{path}: topofr checkpoint without 'backbone' state dict or 'model.network'")
    net = network or checkpoint.network
    notes = (
        []
        if network is None or network == checkpoint.network
        else [f"--network {network} overrides the checkpoint's {checkpoint.network}"]
    )
    embedding_size = _checked_embedding_size(checkpoint.embedding_size, state, net, path)
    return LoadedModel(
        backbone=build_backbone(state, net, embedding_size, path),
        classifier_weight=checkpoint.classifier,
        network=net,
        embedding_size=embedding_size,
        num_classes=checkpoint.num_classes,
        kind=CHECKPOINT_FORMAT,
        recipe=checkpoint.recipe,
        step=checkpoint.step,
        notes=notes,
        latent_scale=checkpoint.latent_scale,
    )


def _checked_embedding_size(declared: Any, state: dict, network: Any, path: Path) -> int:
    """The size the weights have; a declared size must agree: it sizes the model built before the
    weights are compared with it (2**40 would be allocated first)."""
    if not isinstance(network, str) or network not in BACKBONE_NAMES:
        raise TopofrError(
            f"{path}: unknown network {str(network)[:40]!r}; valid: {', '.join(BACKBONE_NAMES)}"
        )
    try:
        stored = embedding_size_of(state, network)
    except (AttributeError, IndexError, TypeError):  # the embedding entry is not a [E, ...] tensor
        stored = None
    if declared is None:
        return stored or 512
    if type(declared) is not int or not 1 <= declared <= MAX_EMBEDDING_SIZE or stored not in (None, declared):
        raise TopofrError(
            f"{path}: model.embedding_size {str(declared)[:40]} does not match the weights "
            f"({stored if stored is not None else 'no embedding layer'})"
        )
    return declared


def _load_state_dict(state: dict, path: Path, network: str | None) -> LoadedModel:
    state = strip_ddp_prefix(state)
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise TopofrError(
            f"{path}: not a state dict or topofr checkpoint (key {non_tensors[0]!r} "
            f"holds a {type(state[non_tensors[0]]).__name__})"
        )
    classifier = state.pop("weight", None)  # the reference keeps its classifier [C, E] in the same dict
    kind = "reference" if classifier is not None else "insightface"
    notes = []
    if network is None:
        network = infer_network(state, path)
        notes.append(f"architecture inferred from the keys: {network}")
    state = checkpoint_filter_fn(state, network)
    embedding_size = embedding_size_of(state, network)
    if embedding_size is None:
        raise TopofrError(f"{path}: no embedding layer ({embedding_key(network)}) for {network}")
    if classifier is not None and (classifier.ndim != 2 or classifier.shape[1] != embedding_size):
        raise TopofrError(
            f"{path}: key 'weight' has shape {tuple(classifier.shape)}, expected a classifier "
            f"[C, {embedding_size}]"
        )
    return LoadedModel(
        backbone=build_backbone(state, network, embedding_size, path),
        classifier_weight=classifier,
        network=network,
        embedding_size=embedding_size,
        num_classes=None if classifier is None else int(classifier.shape[0]),
        kind=kind,
        recipe=None,
        step=None,
        notes=notes,
    )


def load_model(path: str | Path, network: str | None = None) -> LoadedModel:
    """Our checkpoints, the reference's `model.pt` (backbone + classifier `weight` in one state dict),
    insightface backbone files (plain IResNet/mbf state dict, `module.` prefixes allowed), or ONNX.

    The architecture is `network` if given, else our checkpoint's, else inferred from the keys
    (the inference is recorded in `notes`). Files are read with `artifacts.checkpoint.load_weights_file`
    (weights only: no code in a file runs).
    """
    path = Path(path)
    if not path.is_file():
        raise TopofrError(f"{path}: model file not found")
    if _is_onnx(path):
        backbone = OnnxBackbone(path)
        return LoadedModel(
            backbone=backbone,
            classifier_weight=None,
            network="onnx",
            embedding_size=backbone.embedding_size or 0,
            num_classes=None,
            kind="onnx",
            recipe=None,
            step=None,
        )
    payload = load_weights_file(path)
    if not isinstance(payload, dict):
        raise TopofrError(
            f"{path}: expected a state dict or topofr checkpoint, found a {type(payload).__name__}"
        )
    if is_checkpoint_payload(payload):
        return _load_checkpoint(Checkpoint.from_payload(payload, path), path, network)
    if "format" in payload and not isinstance(payload["format"], torch.Tensor):
        raise TopofrError(f"{path}: unknown checkpoint format {payload['format']!r}")
    refuse_non_finite(payload, path)
    return _load_state_dict(dict(payload), path, network)
