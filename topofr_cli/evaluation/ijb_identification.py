"""IJB-B / IJB-C 1:N identification from template features (docs/method.md §3.6).

Each gallery split (G1/G2 for IJB-C, S1/S2 for IJB-B) is searched by every probe template of
`*_1N_probe_mixed.csv`. The protocol is open set: a probe whose subject has no template in that
split is a non-mated search, and its best score is what a false alarm is made of.

- FPIR(t) = non-mated searches whose best score is > t, over the non-mated searches.
- TPIR(t) = mated searches whose mate is ranked first with a score > t, over the mated searches.
- CMC rank k = mated searches whose mate is among the k best scores (a tie counts against the mate).

The threshold at FPIR f (rule `exact`, the default) admits floor(f · N) false alarms among N
non-mated searches, the most that f allows. Rule `insightface` reproduces the arithmetic of
insightface's 1:N script instead: one closed-set gallery G1 ∪ G2, every score of a probe against
a non-mate template pooled, the threshold the ceil(f · P)-th largest of them (P probes), which
admits one false alarm fewer than allowed whenever f · P is a whole number.

Score matrices are computed a block of probes at a time; nothing probe × gallery is kept whole.
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.ijb_protocol import template_positions

FPIR_TARGETS = (1e-3, 1e-2, 1e-1)
CMC_RANKS = (1, 5, 10)
RULES = ("exact", "insightface")
PROTOCOLS = ("1:1", "1:N", "both")
CURVE_RANKS = 50  # the CMC curve of the figure goes this deep
BLOCK_BYTES = 128 * 2**20  # one block of the probe × gallery score matrix


@dataclass
class IdentificationMeta:
    galleries: dict[str, tuple[np.ndarray, np.ndarray]]  # split name: (templates, subjects), sorted
    probes: tuple[np.ndarray, np.ndarray]  # (templates, subjects), sorted by template
    paths: dict[str, Path]  # split name (and "probe"): the CSV it came from


@dataclass
class GalleryResult:
    gallery: str  # G1, G2, S1, S2, or "G1+G2" under the insightface rule
    num_gallery: int
    num_mated: int
    num_nonmated: int
    cmc: dict[int, float]  # rank → fraction of mated searches
    tpir_at_fpir: dict[float, float]
    _: KW_ONLY  # at most six fields by position
    thresholds: dict[float, float]  # FPIR → score threshold (accepted above it)
    fpir_curve: np.ndarray = field(repr=False)  # the DET-style curve: every threshold's FPIR…
    tpir_curve: np.ndarray = field(repr=False)  # …and its TPIR
    cmc_curve: np.ndarray = field(repr=False)  # rank 1 … min(CURVE_RANKS, gallery size)


@dataclass
class IdentificationResult:
    target: str
    rule: str
    galleries: list[GalleryResult]
    num_probes: int


# ------------------------------------------------------------------ files


def identification_paths(root: str | Path, target: str) -> dict[str, Path]:
    meta = Path(root) / "meta"
    prefix = target.lower()
    splits = ("G1", "G2") if target == "IJBC" else ("S1", "S2")
    paths = {split: meta / f"{prefix}_1N_gallery_{split}.csv" for split in splits}
    paths["probe"] = meta / f"{prefix}_1N_probe_mixed.csv"
    return paths


def read_subject_list(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(templates, subjects) of a 1:N CSV (header, then TEMPLATE_ID,SUBJECT_ID,… per image), one entry
    per template, sorted by template id."""
    if not path.is_file():
        raise TopofrError(f"{path}: IJB 1:N file not found")
    rows: list[tuple[int, int]] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for lineno, row in enumerate(csv.reader(handle), 1):
            if lineno == 1 or not row:
                continue  # the header
            try:
                rows.append((int(row[0]), int(row[1])))
            except (ValueError, IndexError):
                raise TopofrError(
                    f"{path}: line {lineno}: expected TEMPLATE_ID,SUBJECT_ID,… (integers), got {row[:2]}"
                ) from None
    if not rows:
        raise TopofrError(f"{path}: no templates listed")
    pairs = np.unique(np.array(rows, dtype=np.int64), axis=0)
    templates, first = np.unique(pairs[:, 0], return_index=True)
    if len(templates) != len(pairs):
        clash = int(pairs[np.flatnonzero(np.diff(pairs[:, 0]) == 0)[0], 0])
        raise TopofrError(f"{path}: template {clash} is listed with two subjects")
    return templates, pairs[first, 1]


def read_identification_meta(root: str | Path, target: str) -> IdentificationMeta:
    """The gallery splits and the probe list; each gallery must hold one template per subject."""
    paths = identification_paths(root, target)
    galleries = {}
    for split, path in paths.items():
        if split == "probe":
            continue
        templates, subjects = read_subject_list(path)
        unique, counts = np.unique(subjects, return_counts=True)
        if (counts > 1).any():
            raise TopofrError(f"{path}: subject {unique[counts > 1][0]} has several gallery templates")
        galleries[split] = (templates, subjects)
    return IdentificationMeta(galleries, read_subject_list(paths["probe"]), paths)


def template_rows(template_ids: np.ndarray, wanted: np.ndarray, source: Path, images_file: str) -> np.ndarray:
    """Rows of the pooled features for the `wanted` templates; each must have images."""
    rows = template_positions(template_ids, wanted)
    if (rows < 0).any():
        raise TopofrError(f"{source}: template {wanted[rows < 0][0]} has no images in {images_file}")
    return rows.astype(np.int64)


# ------------------------------------------------------------------ searching


def _probe_blocks(num_probes: int, num_gallery: int, itemsize: int):
    step = max(1, BLOCK_BYTES // (itemsize * max(1, num_gallery)))
    for start in range(0, num_probes, step):
        yield slice(start, min(num_probes, start + step))


def mate_columns(probe_subjects: np.ndarray, gallery_subjects: np.ndarray) -> np.ndarray:
    """Gallery column of each probe's mate, −1 for a probe whose subject is not in the gallery."""
    order = np.argsort(gallery_subjects, kind="stable")
    found = np.clip(np.searchsorted(gallery_subjects[order], probe_subjects), 0, len(order) - 1)
    return np.where(gallery_subjects[order][found] == probe_subjects, order[found], -1)


def _search(probes: np.ndarray, gallery: np.ndarray, mates: np.ndarray):
    """Per probe: the best score, the mate's score and the mate's rank (ties count against it)."""
    best = np.empty(len(probes), dtype=np.float64)
    mate_score = np.full(len(probes), -np.inf)
    rank = np.zeros(len(probes), dtype=np.int64)
    rows_all = np.arange(len(probes))
    for block in _probe_blocks(len(probes), len(gallery), probes.dtype.itemsize):
        scores = probes[block] @ gallery.T
        best[block] = scores.max(axis=1)
        mated = np.flatnonzero(mates[block] >= 0)
        rows = rows_all[block][mated]
        own = scores[mated, mates[rows]]
        mate_score[rows] = own
        rank[rows] = (scores[mated] >= own[:, None]).sum(axis=1)  # the mate itself is one of them
    return best, mate_score, rank


def exact_threshold(nonmated_best: np.ndarray, fpir: float) -> float:
    """The lowest threshold (accept above it) whose FPIR is at most `fpir`: the (m+1)-th best non-mated
    score, m = floor(fpir · N) false alarms allowed (fewer when scores tie there)."""
    allowed = math.floor(fpir * len(nonmated_best) + 1e-9)
    if allowed >= len(nonmated_best):
        return -np.inf
    return float(np.partition(-nonmated_best, allowed)[allowed] * -1)


def _det_curve(nonmated_best: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPIR and TPIR at every distinct non-mated best score used as the threshold."""
    thresholds = np.unique(nonmated_best)[::-1]
    fpir = (len(nonmated_best) - np.searchsorted(np.sort(nonmated_best), thresholds, side="right")) / max(
        1, len(nonmated_best)
    )
    tpir = (len(hits) - np.searchsorted(np.sort(hits), thresholds, side="right")) / max(1, len(hits))
    return fpir, tpir


def open_set_search(
    gallery: str,
    probes: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_features: np.ndarray,
    gallery_subjects: np.ndarray,
    fpir_targets=FPIR_TARGETS,
) -> GalleryResult:
    """TPIR at each FPIR and the CMC of one gallery split (rule `exact`, see the module docstring)."""
    mates = mate_columns(probe_subjects, gallery_subjects)
    best, mate_score, rank = _search(probes, gallery_features, mates)
    mated = mates >= 0
    nonmated_best = best[~mated]
    # a mated search is a hit at threshold t when its mate is first and scores above t
    hits = np.where(rank[mated] == 1, mate_score[mated], -np.inf)
    thresholds = {f: exact_threshold(nonmated_best, f) for f in fpir_targets}
    num_mated = int(mated.sum())
    depth = min(CURVE_RANKS, len(gallery_features))
    cmc_curve = np.array([(rank[mated] <= k).sum() for k in range(1, depth + 1)]) / max(1, num_mated)
    fpir_curve, tpir_curve = _det_curve(nonmated_best, hits)
    return GalleryResult(
        gallery,
        len(gallery_features),
        num_mated,
        int((~mated).sum()),
        {k: float((rank[mated] <= k).sum() / max(1, num_mated)) for k in CMC_RANKS},
        {f: float((hits > t).sum() / max(1, num_mated)) for f, t in thresholds.items()},
        thresholds=thresholds,
        fpir_curve=fpir_curve,
        tpir_curve=tpir_curve,
        cmc_curve=cmc_curve,
    )


def insightface_search(
    gallery: str,
    probes: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_features: np.ndarray,
    gallery_subjects: np.ndarray,
    fpir_targets=FPIR_TARGETS,
) -> GalleryResult:
    """insightface's 1:N numbers (rule `insightface`): closed set, argsort ranks, pooled non-mate scores."""
    mates = mate_columns(probe_subjects, gallery_subjects)
    if (mates < 0).any():
        raise TopofrError(
            f"rule insightface: probe subject {probe_subjects[mates < 0][0]} has no gallery template"
        )
    num_probes = len(probes)
    required = [math.ceil(num_probes * f) for f in fpir_targets]  # insightface's expression, as written
    keep = max(required)
    position = np.empty(num_probes, dtype=np.int64)
    mate_score = np.empty(num_probes)
    top_nonmates: list[np.ndarray] = []
    for block in _probe_blocks(num_probes, len(gallery_features), probes.dtype.itemsize):
        scores = probes[block] @ gallery_features.T
        order = np.argsort(-scores)  # the same call per row as insightface's, so ties order alike
        position[block] = np.argmax(order == mates[block][:, None], axis=1)
        rows = np.arange(len(scores))
        mate_score[block] = scores[rows, mates[block]]
        scores[rows, mates[block]] = -np.inf
        flat = scores.reshape(-1)
        top_nonmates.append(
            -np.sort(-np.partition(flat, len(flat) - keep)[-keep:]) if keep < len(flat) else flat
        )
    pooled = np.concatenate(top_nonmates)
    negatives = heapq.nlargest(keep, pooled[pooled > -np.inf]) if keep else []
    thresholds, tpir = {}, {}
    for f, k in zip(fpir_targets, required, strict=True):
        thresholds[f] = float(negatives[k - 1]) if 0 < k <= len(negatives) else float("nan")
        tpir[f] = float((mate_score > thresholds[f]).sum() / num_probes)
    depth = min(CURVE_RANKS, len(gallery_features))
    return GalleryResult(
        gallery,
        len(gallery_features),
        num_probes,
        0,
        {k: float((position < k).sum() / num_probes) for k in CMC_RANKS},
        tpir,
        thresholds=thresholds,
        fpir_curve=np.array(fpir_targets),
        tpir_curve=np.array([tpir[f] for f in fpir_targets]),
        cmc_curve=np.array([(position < k).sum() for k in range(1, depth + 1)]) / num_probes,
    )


# ------------------------------------------------------------------ the protocol


def identify_templates(
    features: np.ndarray,
    template_ids: np.ndarray,
    meta: IdentificationMeta,
    target: str,
    *,
    rule: str = "exact",
    images_file: str = "the image list",
) -> IdentificationResult:
    """1:N numbers from pooled template features [T, E] (rows in sorted `template_ids` order)."""
    if rule not in RULES:
        raise TopofrError(f"--ijb-1n-rule {rule}: expected one of {', '.join(RULES)}")
    features = np.asarray(features)
    probe_templates, probe_subjects = meta.probes
    probes = features[template_rows(template_ids, probe_templates, meta.paths["probe"], images_file)]
    splits = {
        name: (features[template_rows(template_ids, t, meta.paths[name], images_file)], s)
        for name, (t, s) in meta.galleries.items()
    }
    if rule == "insightface":  # one gallery: both splits, sorted by template id as insightface does
        templates = np.concatenate([t for t, _ in meta.galleries.values()])
        order = np.argsort(templates, kind="stable")
        merged = np.concatenate([f for f, _ in splits.values()])[order]
        subjects = np.concatenate([s for _, s in splits.values()])[order]
        name = "+".join(splits)
        galleries = [insightface_search(name, probes, probe_subjects, merged, subjects)]
    else:
        galleries = [
            open_set_search(name, probes, probe_subjects, feats, subjects)
            for name, (feats, subjects) in splits.items()
        ]
    return IdentificationResult(target, rule, galleries, len(probe_templates))


def run_identification(
    backbone: Any,
    root: str | Path,
    target: str = "IJBC",
    *,
    rule: str = "exact",
    templates: Any = None,
    flip: bool = True,
    use_norm_score: bool = True,
    use_detector_score: bool = True,
    batch_size: int = 128,
    num_workers: int = 2,
    device="cpu",
    on_images: Callable[[int], None] | None = None,
) -> IdentificationResult:
    """IJB-B/C 1:N: embed and pool as for 1:1 (or reuse `templates`, an `ijb.TemplateFeatures`), then
    search each gallery split. The 1:N lists are read first, so a bad file fails before embedding."""
    from topofr_cli.evaluation.ijb import check_target, pool_templates
    from topofr_cli.evaluation.ijb_protocol import meta_paths, read_ijb_meta

    target = check_target(target)
    meta = read_identification_meta(root, target)
    if rule not in RULES:
        raise TopofrError(f"--ijb-1n-rule {rule}: expected one of {', '.join(RULES)}")
    if templates is None:
        templates = pool_templates(
            backbone,
            root,
            target,
            read_ijb_meta(root, target),
            flip=flip,
            use_norm_score=use_norm_score,
            use_detector_score=use_detector_score,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            on_images=on_images,
        )
    images_file = meta_paths(root, target)["tid_mid"].name
    return identify_templates(
        templates.features, templates.template_ids, meta, target, rule=rule, images_file=images_file
    )


def check_protocol(protocol: str, rule: str) -> tuple[bool, bool]:
    """(run 1:1, run 1:N) for `--ijb-protocol`; bad values fail before the model is loaded."""
    from topofr_cli.errors import TopofrError

    if protocol not in PROTOCOLS:
        raise TopofrError(f"--ijb-protocol {protocol}: expected one of {', '.join(PROTOCOLS)}")
    if rule not in RULES:
        raise TopofrError(f"--ijb-1n-rule {rule}: expected one of {', '.join(RULES)}")
    return protocol in ("1:1", "both"), protocol in ("1:N", "both")
