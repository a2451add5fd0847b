"""IJB-B / IJB-C 1:1 verification end to end: align, embed (streamed), pool, score, TAR@FAR (§3.4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from topofr_cli.data.align import align_face
from topofr_cli.data.images import ImageDecodeError, decode_image
from topofr_cli.data.ordered import GuardedImages, iterate_batches
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.embed import stream_embeddings
from topofr_cli.evaluation.ijb_protocol import (
    FAR_TARGETS,
    IJBMeta,
    TemplatePooler,
    area_under,
    image_features,
    meta_paths,
    read_ijb_meta,
    roc_curve,
    score_pairs,
    tar_at_far,
)

TARGETS = ("IJBC", "IJBB")


class IJBImageLoader:
    """Picklable `load(i)`: read `loose_crop/<name>`, decode, align its 5 landmarks to 112×112."""

    def __init__(self, image_dir: Path, names: np.ndarray, landmarks: np.ndarray, landmark_file: Path):
        self.image_dir = image_dir
        self.names = names
        self.landmarks = landmarks
        self.landmark_file = landmark_file

    def __call__(self, index: int) -> np.ndarray:
        path = self.image_dir / str(self.names[index])
        where = f"(row {index + 1} of {self.landmark_file.name})"
        try:
            rgb = decode_image(path.read_bytes())
        except FileNotFoundError:
            raise TopofrError(f"{path}: image not found {where}") from None
        except ImageDecodeError as exc:
            raise TopofrError(f"{path}: {exc} {where}") from None
        try:
            return align_face(rgb, self.landmarks[index])
        except ValueError as exc:
            raise TopofrError(
                f"{self.landmark_file}: row {index + 1}: landmarks cannot be aligned ({exc})"
            ) from None


@dataclass
class TemplateFeatures:
    """Pooled, L2-normalised template features [T, E] (float32) in `template_ids` (sorted) order."""

    features: np.ndarray
    template_ids: np.ndarray


@dataclass
class IJBResult:
    target: str
    scores: np.ndarray  # [P] cosine score per pair, in pair-file order
    labels: np.ndarray  # [P]
    tar_at_far: dict[float, float]  # FAR → TAR
    fpr: np.ndarray
    tpr: np.ndarray
    _: KW_ONLY  # at most six fields by position
    auc: float
    num_images: int
    num_templates: int
    templates: TemplateFeatures | None = None  # kept so 1:N can reuse them without embedding again


def check_target(target: str) -> str:
    target = target.upper()
    if target not in TARGETS:
        raise TopofrError(f"--target {target}: expected one of {', '.join(TARGETS)}")
    return target


def ijb_image_loader(root: str | Path, target: str, meta: IJBMeta) -> GuardedImages:
    image_dir = Path(root) / "loose_crop"
    if not image_dir.is_dir():
        raise TopofrError(f"{image_dir}: IJB image folder not found")
    loader = IJBImageLoader(
        image_dir, meta.image_names, meta.landmarks, meta_paths(root, target)["landmarks"]
    )
    return GuardedImages(loader, len(meta.image_names))


def pool_templates(
    backbone: Any,
    root: str | Path,
    target: str,
    meta: IJBMeta,
    *,
    flip: bool = True,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    batch_size: int = 128,
    num_workers: int = 2,
    device="cpu",
    on_images: Callable[[int], None] | None = None,
) -> TemplateFeatures:
    """Embed every image of `meta` and pool them into template features (§3.4).

    Images stream through a DataLoader; their features are pooled into templates chunk by chunk,
    so memory holds templates, not images.
    """
    images = ijb_image_loader(root, target, meta)
    batches = iterate_batches(images, batch_size=batch_size, num_workers=num_workers, on_images=on_images)
    pooler = None
    seen = 0
    for chunk in stream_embeddings(backbone, batches, flip=flip, device=device):
        if pooler is None:
            pooler = TemplatePooler(meta.templates, meta.medias, chunk.shape[1])
        rows = slice(seen, seen + len(chunk))
        pooler.add(
            image_features(
                chunk,
                meta.detector_scores[rows],
                use_norm_score=use_norm_score,
                use_detector_score=use_detector_score,
            )
        )
        seen += len(chunk)
    return TemplateFeatures(pooler.template_features().numpy(), pooler.template_ids)


def evaluate_ijb(
    backbone: Any,
    root: str | Path,
    target: str = "IJBC",
    *,
    flip: bool = True,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    batch_size: int = 128,
    num_workers: int = 2,
    device="cpu",
    meta: IJBMeta | None = None,
    on_images: Callable[[int], None] | None = None,
) -> IJBResult:
    """TAR at FAR 1e-6 … 1e-1 with insightface's defaults (flip-sum, raw norms, detector-score weights)."""
    target = check_target(target)
    meta = meta if meta is not None else read_ijb_meta(root, target)
    templates = pool_templates(
        backbone,
        root,
        target,
        meta,
        flip=flip,
        use_norm_score=use_norm_score,
        use_detector_score=use_detector_score,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        on_images=on_images,
    )
    scores = score_pairs(torch.from_numpy(templates.features), templates.template_ids, meta.pair_templates)
    fpr, tpr, _ = roc_curve(meta.pair_labels, scores)
    return IJBResult(
        target=target,
        scores=scores,
        labels=meta.pair_labels,
        tar_at_far=tar_at_far(fpr, tpr, FAR_TARGETS),
        fpr=fpr,
        tpr=tpr,
        auc=area_under(fpr, tpr),
        num_images=len(meta.image_names),
        num_templates=len(templates.template_ids),
        templates=templates,
    )
