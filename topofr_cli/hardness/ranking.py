"""Score every image of a dataset by its structure damage (docs/method.md §1.3) with a trained model.

One streaming pass: each batch goes through the backbone (eval mode, no perturbation), the margin
softmax over the full classifier is reduced block by block (`class_softmax`), and the per-image
figures land in preallocated NumPy arrays, so memory grows only by a few numbers per image.
The GUM is then fitted over the whole dataset (default) or was fitted per batch, as in training.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from topofr_cli.config import Recipe
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.errors import TopofrError
from topofr_cli.hardness import gum_posterior
from topofr_cli.hardness.class_softmax import (
    DEFAULT_CLASS_BLOCK,
    margin_softmax_stats,
    normalized_classifier,
)
from topofr_cli.hardness.sds import sample_weights, sde_statistic
from topofr_cli.progress import Progress, resolve_progress

GumScope = Literal["dataset", "batch"]
# Where the class probabilities come from. "noise": the scaled cosines alone, as at inference, so a
# clean image the model recognises has p_gt near 1 and a mislabelled one near 0 (finds label noise).
# "paper": the training margin logits (docs/method.md §1.3), as the SDE weights see them in training;
# a large margin pushes p_gt of clean images towards 0 too.
Mode = Literal["noise", "paper"]
MODES: tuple[str, ...] = ("noise", "paper")
# Ranking wants the paper's weights as written; the "reference" mode would make w2 ≡ 1 (§2.1).
WEIGHT_MODE = "fixed"
_FLUSH_EVERY = 32  # batches kept on the device between host copies (one sync per flush)
DEGENERACY_SAMPLE = 4096  # embeddings, spread evenly over the dataset, for the collapse check


@dataclass
class GumFit:
    """The dataset-wide Gaussian–uniform mixture (scalars only; γ lives in the table)."""

    pi: float
    sigma2: float
    c: float
    iterations: int


@dataclass
class HardnessTable:
    """Per-image figures in dataset order (arrays of length N)."""

    labels: np.ndarray  # int64
    predicted: np.ndarray  # int64, class of the largest cosine (the model's decision)
    runner_up: np.ndarray  # int64, class of the second-largest cosine (−1 if there is none)
    p_true: (
        np.ndarray
    )  # float32, softmax probabilities of the label (from the cosines or margin logits: `mode`)
    p_predicted: np.ndarray
    p_runner_up: np.ndarray
    _: KW_ONLY  # at most six fields by position
    cosine_gap: np.ndarray  # float32, cos θ_predicted − cos θ_runner_up
    entropy: np.ndarray
    gum_input: np.ndarray  # float64, sde_statistic(H): what the GUM was fitted on
    gamma: np.ndarray  # float64, posterior of the Gaussian ("normal") component
    w1: np.ndarray
    w2: np.ndarray
    sds: np.ndarray  # w1 · w2
    gum_scope: str
    gum: GumFit | None  # None for per-batch fits
    mode: str = "paper"  # where p_gt came from (`Mode`)
    temperature: float = 1.0  # of the SDE weights (recipe topofr.sde.temperature)
    mean_cosine: float | None = None  # between embeddings of different images (evaluation.degeneracy)
    degenerate: bool = False  # a collapsed model: its probabilities rank nothing

    def __len__(self) -> int:
        return len(self.labels)

    def ranking(self) -> np.ndarray:
        """Indices by SDS, highest first; ties keep dataset order."""
        return np.argsort(-self.sds, kind="stable")


def check_inputs(model: Any, dataset: FaceDataset, model_path: str, data_path: str) -> None:
    """Refuse inputs that cannot give class probabilities for this dataset."""
    if model.classifier_weight is None:
        raise TopofrError(
            f"{model_path}: this model is a bare backbone with no classifier; the structure damage "
            "score needs class probabilities, so pass a training checkpoint (checkpoints/step_*.pt)"
        )
    if len(dataset) == 0:
        raise TopofrError(f"{data_path}: the dataset has no images")
    classes = int(model.classifier_weight.shape[0])
    if int(dataset.num_classes) != classes:
        raise TopofrError(
            f"{data_path}: the dataset has {dataset.num_classes} classes but the classifier in "
            f"{model_path} has {classes}; rank with the dataset the model was trained on"
        )


def _fit_batch_gum(entropy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training-time fit: GUM input and γ from this batch alone."""
    statistic = sde_statistic(entropy.double())
    return statistic, gum_posterior(statistic).gamma.to(statistic.device, torch.float64)


@torch.inference_mode()
def score_dataset(
    model: Any,
    dataset: FaceDataset,
    *,
    batch_size: int = 256,
    gum_scope: GumScope = "dataset",
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    class_block: int = DEFAULT_CLASS_BLOCK,
    progress: Progress | bool | None = None,
    mode: Mode = "noise",
) -> HardnessTable:
    """Compute p_gt, prediction, entropy, γ, w1, w2 and SDS for every image of `dataset`.

    `model` is an `evaluation.model_io.LoadedModel` with a classifier (see `check_inputs`).
    `mode` (`Mode`): "noise" takes the probabilities from the scaled cosines alone (as at inference);
    "paper" from the training margin logits of docs/method.md §1.3, where a large margin pushes p_gt of
    clean images towards 0, and then w1 (uncertainty) rather than w2 (label agreement) orders the ranking.
    """
    from topofr_cli.data.loader import normalize
    from topofr_cli.data.ordered import dataset_batches
    from topofr_cli.evaluation.degeneracy import embedding_degeneracy
    from topofr_cli.models.heads import CombinedMarginHead

    if gum_scope not in ("dataset", "batch"):
        raise TopofrError(f"--gum-scope: expected 'dataset' or 'batch', got {gum_scope!r}")
    if mode not in MODES:
        raise TopofrError(f"--mode: expected 'noise' or 'paper', got {mode!r}")
    device = torch.device(device)
    recipe = model.recipe or Recipe()  # files without a recipe: the method's defaults (docs/method.md §1.3)
    settings = recipe.head if mode == "paper" else replace(recipe.head, m1=1.0, m2=0.0, m3=0.0)
    head = CombinedMarginHead(scale=settings.scale, m1=settings.m1, m2=settings.m2, m3=settings.m3)
    head = head.to(device).eval()
    backbone = model.backbone.to(device).eval()
    weight = normalized_classifier(model.classifier_weight, device)

    n = len(dataset)
    labels, predicted, runner_up = (np.empty(n, np.int64) for _ in range(3))
    p_true, p_predicted, p_runner_up, cosine_gap, entropy = (np.empty(n, np.float32) for _ in range(5))
    batch_fit = np.empty((n, 2), np.float64) if gum_scope == "batch" else None  # gum_input, gamma
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    stride = max(1, -(-n // DEGENERACY_SAMPLE))
    sampled: list[torch.Tensor] = []  # every stride-th image's embedding, kept on the device

    def flush() -> None:
        if not pending:
            return
        index = torch.cat([p[0] for p in pending]).numpy()
        ints = torch.cat([p[1] for p in pending]).cpu().numpy()
        floats = torch.cat([p[2] for p in pending]).cpu().numpy()
        for column, target in enumerate((predicted, runner_up, labels)):
            target[index] = ints[:, column]
        for column, target in enumerate((p_true, p_predicted, p_runner_up, cosine_gap, entropy)):
            target[index] = floats[:, column]
        if batch_fit is not None:
            batch_fit[index] = torch.cat([p[3] for p in pending]).cpu().numpy()
        pending.clear()

    task = resolve_progress(progress).start("scoring images", n)
    try:
        for images, batch_labels, indices in dataset_batches(dataset, batch_size, num_workers=num_workers):
            images = normalize(images.to(device, non_blocking=True))
            batch_labels = batch_labels.to(device, non_blocking=True)
            embeddings = backbone(images)
            # positions chosen on the host from the (CPU) indices: no device sync
            keep = torch.nonzero(indices % stride == 0).squeeze(1).to(device, non_blocking=True)
            sampled.append(embeddings.index_select(0, keep))
            stats = margin_softmax_stats(embeddings, batch_labels, weight, head, class_block=class_block)
            fit = None
            if batch_fit is not None:
                fit = torch.stack(_fit_batch_gum(stats.entropy), dim=1)
            pending.append(
                (
                    indices.to(torch.int64),
                    torch.stack([stats.predicted, stats.runner_up, batch_labels], dim=1),
                    torch.stack(
                        [stats.p_true, stats.p_predicted, stats.p_runner_up, stats.cosine_gap, stats.entropy],
                        dim=1,
                    ),
                    fit,
                )
            )
            if len(pending) >= _FLUSH_EVERY:
                flush()
            task.advance(len(indices))
        flush()
    finally:
        task.close()
    table = finish_table(
        labels=labels,
        predicted=predicted,
        runner_up=runner_up,
        p_true=p_true,
        p_predicted=p_predicted,
        p_runner_up=p_runner_up,
        cosine_gap=cosine_gap,
        entropy=entropy,
        gum_scope=gum_scope,
        batch_fit=batch_fit,
        temperature=recipe.topofr.sde.temperature,
        mode=mode,
    )
    sample = torch.cat(sampled).float().cpu().numpy()
    if len(sample) >= 2:
        table.mean_cosine, table.degenerate = embedding_degeneracy(sample)
    return table


def finish_table(
    *,
    labels: np.ndarray,
    predicted: np.ndarray,
    runner_up: np.ndarray,
    p_true: np.ndarray,
    p_predicted: np.ndarray,
    p_runner_up: np.ndarray,
    cosine_gap: np.ndarray,
    entropy: np.ndarray,
    gum_scope: str,
    batch_fit: np.ndarray | None,
    temperature: float,
    mode: str = "paper",
) -> HardnessTable:
    """Fit the GUM over the whole dataset (unless per-batch γ is given) and weight every image."""
    gum = None
    if batch_fit is None:
        statistic = sde_statistic(torch.from_numpy(entropy.astype(np.float64)))
        result = gum_posterior(statistic)
        gum_input = _numpy64(statistic)
        gamma = _numpy64(result.gamma)
        gum = GumFit(
            pi=float(result.pi),
            sigma2=float(result.sigma2),
            c=float(result.c),
            iterations=int(result.iterations),
        )
    else:
        gum_input, gamma = batch_fit[:, 0].copy(), batch_fit[:, 1].copy()
    w1, w2 = sample_weights(
        torch.from_numpy(gamma), torch.from_numpy(p_true.astype(np.float64)), temperature, WEIGHT_MODE
    )
    w1, w2 = _numpy64(w1), _numpy64(w2)
    return HardnessTable(
        labels=labels,
        predicted=predicted,
        runner_up=runner_up,
        p_true=p_true,
        p_predicted=p_predicted,
        p_runner_up=p_runner_up,
        cosine_gap=cosine_gap,
        entropy=entropy,
        gum_input=gum_input,
        gamma=gamma,
        w1=w1,
        w2=w2,
        sds=w1 * w2,
        gum_scope=gum_scope,
        gum=gum,
        mode=mode,
        temperature=temperature,
    )


def _numpy64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
