"""`analyze-topology`'s core: sample a dataset, embed it with each model or checkpoint, and compare the
topology of the latent spaces with that of the input space (docs/method.md §1.2)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from topofr_cli.analysis.collapse import run_checkpoints
from topofr_cli.analysis.sampling import draw_sample
from topofr_cli.analysis.spaces import (
    INPUT_SPACE,
    LATENT_L2_SPACE,
    LATENT_SPACE,
    SpaceComparison,
    SpaceTopology,
    compare_spaces,
    space_topologies,
)
from topofr_cli.artifacts.outputs import model_label
from topofr_cli.data import open_dataset
from topofr_cli.data.bins import VerificationPairs, read_bin
from topofr_cli.data.loader import normalize
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.degeneracy import embedding_degeneracy
from topofr_cli.evaluation.embed import embed_images
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.evaluation.verification import evaluate_pairs
from topofr_cli.progress import Progress, resolve_progress, stage, track
from topofr_cli.topology import input_distances, latent_distances

MODEL_IMAGE_SIZE = (112, 112)


@dataclass
class Sample:
    dataset: Path
    indices: np.ndarray  # int64 [n], ascending dataset indices
    labels: np.ndarray  # int64 [n]
    images: torch.Tensor  # uint8 [n, 3, H, W]


@dataclass
class ModelPoint:
    """One model file, or one checkpoint of a run directory, analysed on the sample."""

    path: Path
    step: int | None
    latent_scale: float
    embedding_size: int
    topologies: dict[str, SpaceTopology]  # latent, latent_l2 (distance matrices dropped)
    comparisons: dict[str, SpaceComparison]
    _: KW_ONLY  # at most six fields by position
    embeddings_l2: np.ndarray  # float32 [n, E]
    seconds: dict[str, float] = field(default_factory=dict)
    mean_cosine: float = 0.0  # between different images of the sample (evaluation.degeneracy)
    degenerate: bool = False
    verification: Verification | None = None  # when the dataset has a held-out .bin


@dataclass
class Verification:
    """10-fold accuracy of one model on the dataset's held-out pairs (docs/method.md §3.3)."""

    bin_name: str
    accuracy: float
    accuracy_std: float


@dataclass
class HeldOut:
    """The dataset's first held-out verification set, read once and scored for every checkpoint."""

    path: Path
    pairs: VerificationPairs


@dataclass
class Target:
    """What one positional argument named: a model file (one point) or a run directory (one per checkpoint)."""

    label: str
    path: Path
    is_run: bool
    points: list[ModelPoint]


@dataclass
class AnalysisResult:
    sample: Sample
    dims: tuple[int, ...]
    seed: int
    per_identity: int | None
    input: SpaceTopology
    targets: list[Target]
    _: KW_ONLY  # at most six fields by position
    seconds: dict[str, float]


def load_sample(
    dataset_path: str | Path,
    *,
    samples: int,
    per_identity: int | None,
    seed: int,
    progress: Progress | bool | None = None,
) -> Sample:
    """Draw the sample (see `draw_sample`) and decode its images into one uint8 tensor."""
    dataset = open_dataset(dataset_path)
    indices = draw_sample(
        dataset.labels, samples, per_identity=per_identity, seed=seed, source=str(dataset_path)
    )
    images = []
    for index in track(resolve_progress(progress), indices.tolist(), "decoding sample", len(indices)):
        rgb, _ = dataset[index]
        if images and rgb.shape != images[0].shape:
            raise TopofrError(
                f"{dataset_path}: image {dataset.source_key(index)} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"the sample's first image is {images[0].shape[1]}x{images[0].shape[0]} (mixed sizes)"
            )
        images.append(rgb)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return Sample(Path(dataset_path), indices, dataset.labels[indices].astype(np.int64), stacked)


def input_space_distances(sample: Sample, device: torch.device) -> torch.Tensor:
    """A^X of the sample (docs/method.md §1.2) computed on `device`, returned on the CPU."""
    return input_distances(normalize(sample.images.to(device))).cpu()


def analyze_model(
    path: Path,
    sample: Sample,
    input_topology: SpaceTopology,
    dims: Sequence[int],
    *,
    step: int | None,
    batch_size: int,
    device: torch.device,
    progress: Progress | bool | None = None,
    description: str = "embedding",
    keep_bars: bool = True,
    held_out: HeldOut | None = None,
) -> ModelPoint:
    """Embed the sample with one model (eval mode, no flip) and compare its latent spaces to the input."""
    if tuple(sample.images.shape[2:]) != MODEL_IMAGE_SIZE:
        raise TopofrError(
            f"{sample.dataset}: images are {sample.images.shape[3]}x{sample.images.shape[2]}, "
            f"face models take {MODEL_IMAGE_SIZE[1]}x{MODEL_IMAGE_SIZE[0]}"
        )
    progress = resolve_progress(progress)
    start = time.perf_counter()
    loaded = load_model(path)
    scale = (
        1.0 if loaded.latent_scale is None else loaded.latent_scale
    )  # the reference's constant λ = 1 otherwise
    if not scale > 0:
        raise TopofrError(f"{path}: key 'latent_scale' is {scale}, a latent scale must be positive")
    images = sample.images
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    total = -(-len(images) // batch_size)
    embeddings = torch.from_numpy(
        embed_images(
            loaded.backbone,
            track(progress, batches, description, total, transient=not keep_bars),
            flip=False,
            device=device,
        )
    )
    if embeddings.ndim != 2 or (loaded.embedding_size and embeddings.shape[1] != loaded.embedding_size):
        raise TopofrError(
            f"{path}: model declares embedding size {loaded.embedding_size} but produced "
            f"{tuple(embeddings.shape[1:])}-dim embeddings"
        )
    if not torch.isfinite(embeddings).all():
        raise TopofrError(f"{path}: the model produced NaN or infinite embeddings on {sample.dataset}")
    embed_seconds = time.perf_counter() - start
    normalized = F.normalize(embeddings, dim=1)
    start = time.perf_counter()
    with stage(progress, f"{description}: persistence and distances", transient=not keep_bars):
        topologies = space_topologies(
            {
                LATENT_SPACE: latent_distances(embeddings, scale),
                LATENT_L2_SPACE: latent_distances(normalized, 1.0),
            },
            dims,
        )
        comparisons = {space: compare_spaces(input_topology, topo) for space, topo in topologies.items()}
    for topology in topologies.values():
        topology.distances = None  # n × n per space and checkpoint adds up on long runs
    mean_cosine, degenerate = embedding_degeneracy(normalized.numpy())
    verification, verify_start = None, time.perf_counter()
    if held_out is not None:
        with stage(progress, f"{description}: verification on {held_out.path.name}", transient=not keep_bars):
            result = evaluate_pairs(
                loaded.backbone, held_out.pairs, held_out.path, batch_size=batch_size, device=device
            )
        verification = Verification(held_out.path.name, result.accuracy_mean, result.accuracy_std)
    return ModelPoint(
        path=path,
        step=step if step is not None else loaded.step,
        latent_scale=scale,
        embedding_size=int(embeddings.shape[1]),
        topologies=topologies,
        comparisons=comparisons,
        embeddings_l2=normalized.numpy(),
        seconds={
            "embed": embed_seconds,
            "topology": verify_start - start,
            "verification": time.perf_counter() - verify_start,
        },
        mean_cosine=mean_cosine,
        degenerate=degenerate,
        verification=verification,
    )


def held_out_pairs(dataset_path: str | Path) -> HeldOut | None:
    """The first `verification_bins` entry of the dataset's meta.json (packed datasets), else None."""
    meta_file = Path(dataset_path) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None  # not a packed dataset, or one without metadata: no held-out pairs to score
    names = meta.get("verification_bins") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        return None
    path = Path(dataset_path) / str(names[0])
    if not path.is_file():
        raise TopofrError(f"{meta_file}: verification_bins entry {path.name} does not exist")
    return HeldOut(path, read_bin(path))


def _unique_labels(paths: Sequence[Path]) -> list[str]:
    labels: list[str] = []
    for path in paths:
        base = path.name if path.is_dir() else model_label(path)
        label, k = base or "model", 2
        while label in labels:
            label, k = f"{base}-{k}", k + 1
        labels.append(label)
    return labels


def analyze(
    dataset_path: str | Path,
    models: Sequence[str | Path],
    *,
    samples: int = 512,
    per_identity: int | None = None,
    dims: Sequence[int] = (0, 1),
    seed: int = 0,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: Progress | bool | None = None,
) -> AnalysisResult:
    """Input-space topology of a dataset sample and, for each model file or run directory, the
    topology of its latent spaces and their distances to the input space.

    An empty `models` analyses the input space alone (`--no-model`). A directory is a run directory
    (`checkpoints/step_*.pt`, one point per checkpoint in step order); anything else a model file.
    """
    if batch_size < 1:
        raise TopofrError(f"--batch-size must be at least 1, got {batch_size}")
    dims = tuple(sorted(set(dims)))
    device = torch.device(device)
    progress = resolve_progress(progress)
    paths = [Path(m) for m in models]
    # Fail on a bad run directory before the expensive work starts.
    plans = [(path, run_checkpoints(path) if path.is_dir() else None) for path in paths]
    for path, _ in plans:
        if not path.exists():
            raise TopofrError(f"{path}: no such model file or run directory")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    sample = load_sample(
        dataset_path, samples=samples, per_identity=per_identity, seed=seed, progress=progress
    )
    seconds["load_sample"] = time.perf_counter() - start
    start = time.perf_counter()
    a_x = input_space_distances(sample, device)
    seconds["input_distances"] = time.perf_counter() - start
    start = time.perf_counter()
    with stage(progress, "input space: persistence"):
        input_topology = space_topologies({INPUT_SPACE: a_x}, dims)[INPUT_SPACE]
    seconds["input_topology"] = time.perf_counter() - start
    held_out = held_out_pairs(dataset_path) if paths else None

    targets = []
    for label, (path, checkpoints) in zip(_unique_labels(paths), plans, strict=True):
        if checkpoints is None:
            point = analyze_model(
                path,
                sample,
                input_topology,
                dims,
                step=None,
                batch_size=batch_size,
                device=device,
                progress=progress,
                description=f"embedding {label}",
                held_out=held_out,
            )
            targets.append(Target(label, path, False, [point]))
            continue
        points = [
            analyze_model(
                ckpt,
                sample,
                input_topology,
                dims,
                step=step,
                batch_size=batch_size,
                device=device,
                progress=progress,
                description=f"{label} step {step}",
                keep_bars=False,
                held_out=held_out,
            )
            for step, ckpt in track(progress, checkpoints, f"checkpoints of {label}", len(checkpoints))
        ]
        targets.append(Target(label, path, True, points))
    return AnalysisResult(
        sample=sample,
        dims=dims,
        seed=seed,
        per_identity=per_identity,
        input=input_topology,
        targets=targets,
        seconds=seconds,
    )
