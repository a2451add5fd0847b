"""topofr: TopoFR face recognition toolkit (training, evaluation, topology analysis).

The names below are importable from `topofr_cli` directly and load their module (and torch) on first
use, so `import topofr_cli` stays light:

    from topofr_cli import create_backbone, embed, load_model, TopoFRLoss

- models: `create_backbone(name, embedding_size)`, `IResNet`, `MobileFaceNet`, `CombinedMarginHead`,
  `PartialFC`, `ClassifierOutput`
- inference: `load_model(path)` (topofr checkpoint, reference or insightface .pt/.pth, ONNX),
  `embed(model, images)` (L2-normalised, flip-summed embeddings), `LoadedModel`
- data: `open_dataset(path)` (packed folder, RecordIO, image folder), `FaceDataset`
- losses: `TopoFRLoss` (drop-in TopoFR loss for your own loop), `ptsa_loss`, `PTSALoss`,
  `TopoFRObjective`, `RandomStructurePerturbation`
- recipes: `load_recipe(path, overrides)`, `resolve_recipe(name)`, `packaged_recipes()`, `Recipe`
- commands, one call each with the CLI's defaults, returning a typed result with `to_json()` (the
  command's `--json` object): `evaluate(model, bins=..., out=...) -> EvalResult`,
  `hard_samples(model, data, ...) -> HardSamplesResult`, `analyze_topology(data, models, ...) ->
  TopologyResult`, `prepare_folder(source, out, ...) -> PrepareResult`, `export_model(model, out)`,
  `train(recipe, overrides=[...]) -> TrainResult`
- clustering: `cluster(...) -> ClusterResult` (what `topofr cluster` does), `cluster_embeddings(embeddings)`
- `topofr_cli.commands.bench.bench(device, quick=...) -> BenchResult` is `topofr bench` (`topofr_cli.bench`
  is the package of its measurements)
- `TopofrError`: every user-facing error
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.1"  # the one source: pyproject reads it (tool.setuptools.dynamic)

_EXPORTS = {  # public name: the module that defines it
    "create_backbone": "topofr_cli.models",
    "IResNet": "topofr_cli.models.iresnet",
    "MobileFaceNet": "topofr_cli.models.mobilefacenet",
    "CombinedMarginHead": "topofr_cli.models.heads",
    "PartialFC": "topofr_cli.models.partial_fc",
    "ClassifierOutput": "topofr_cli.models.partial_fc",
    "load_model": "topofr_cli.evaluation.model_io",
    "LoadedModel": "topofr_cli.evaluation.model_io",
    "embed": "topofr_cli.evaluation.embed",
    "open_dataset": "topofr_cli.data",
    "FaceDataset": "topofr_cli.data.dataset",
    "TopoFRLoss": "topofr_cli.engine.topofr_loss",
    "TopoFRObjective": "topofr_cli.engine.topofr_objective",
    "ptsa_loss": "topofr_cli.topology.ptsa",
    "PTSALoss": "topofr_cli.topology.ptsa",
    "RandomStructurePerturbation": "topofr_cli.augment.rsp",
    "load_recipe": "topofr_cli.config",
    "Recipe": "topofr_cli.config",
    "resolve_recipe": "topofr_cli.recipes",
    "packaged_recipes": "topofr_cli.recipes",
    "TopofrError": "topofr_cli.errors",
    "evaluate": "topofr_cli.commands.evaluate",
    "EvalResult": "topofr_cli.commands.evaluate",
    "hard_samples": "topofr_cli.commands.hard_samples",
    "HardSamplesResult": "topofr_cli.commands.hard_samples",
    "analyze_topology": "topofr_cli.commands.analyze_topology",
    "TopologyResult": "topofr_cli.commands.analyze_topology",
    "prepare_folder": "topofr_cli.commands.prepare",
    "prepare_rec": "topofr_cli.commands.prepare",
    "prepare_bin": "topofr_cli.commands.prepare",
    "prepare_synthetic": "topofr_cli.commands.prepare",
    "PrepareResult": "topofr_cli.commands.prepare",
    "export_model": "topofr_cli.commands.export",
    "train": "topofr_cli.commands.train",
    "TrainResult": "topofr_cli.commands.train",
    "cluster": "topofr_cli.commands.cluster",
    "ClusterResult": "topofr_cli.commands.cluster",
    "cluster_embeddings": "topofr_cli.clustering.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topofr_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
