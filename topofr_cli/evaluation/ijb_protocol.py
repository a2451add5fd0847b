"""IJB-B / IJB-C 1:1 arithmetic of insightface's `eval_ijbc.py` (docs/method.md §3.4), vectorised.

- Meta files are parsed by pyarrow (fast path); any problem re-parses the file line by line to
  name the offending line.
- Media then template pooling is one weighted scatter-add: an image's feature is divided by the
  number of images of its (template, media) group, so summing a template's rows gives
  Σ_media mean(media images) exactly. It runs chunk by chunk as embeddings arrive.
- Pair scores are cosine similarities computed as blocks of a matrix product (templates of the
  side with fewer distinct ids × the other side's templates), from which each pair's entry is
  picked: a GEMM instead of gathering two 512-d rows per pair.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from topofr_cli.errors import TopofrError

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SCORE_BLOCK_BYTES = 512 * 2**20  # memory of one block of the score matrix


# ------------------------------------------------------------------ meta files


def _parse_lines(path: Path, kinds: list[type], what: str) -> list[np.ndarray]:
    """Slow, exact parser: names the first bad line and column."""
    columns: list[list] = [[] for _ in kinds]
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != len(kinds):
                raise TopofrError(
                    f"{path}: line {lineno}: {len(tokens)} columns, expected {len(kinds)} ({what})"
                )
            for column, (kind, token) in enumerate(zip(kinds, tokens, strict=True)):
                try:
                    columns[column].append(kind(token))
                except ValueError:
                    raise TopofrError(
                        f"{path}: line {lineno}: column {column + 1} is {token!r}, "
                        f"expected {kind.__name__} ({what})"
                    ) from None
    if not columns[0]:
        raise TopofrError(f"{path}: empty file ({what})")
    return [
        np.array(col, dtype=object if kind is str else np.int64 if kind is int else np.float32)
        for col, kind in zip(columns, kinds, strict=True)
    ]


def read_table(path: str | Path, kinds: list[type], what: str) -> list[np.ndarray]:
    """Space-separated columns of the given kinds (str, int, float), one numpy array per column."""
    path = Path(path)
    if not path.is_file():
        raise TopofrError(f"{path}: IJB meta file not found")
    try:
        import pyarrow as pa
        import pyarrow.csv as csv

        arrow_types = {str: pa.string(), int: pa.int64(), float: pa.float32()}
        names = [f"c{i}" for i in range(len(kinds))]
        table = csv.read_csv(
            path,
            read_options=csv.ReadOptions(column_names=names),
            parse_options=csv.ParseOptions(delimiter=" "),
            convert_options=csv.ConvertOptions(
                column_types={n: arrow_types[k] for n, k in zip(names, kinds, strict=True)}
            ),
        )
        if table.num_rows == 0 or any(table.column(n).null_count for n in names):
            raise ValueError("empty file or empty fields")
        return [
            table.column(n).to_numpy(zero_copy_only=False) if k is str else table.column(n).to_numpy()
            for n, k in zip(names, kinds, strict=True)
        ]
    except Exception:  # any fast-path failure (ArrowInvalid, empty fields, …): the exact parser explains
        return _parse_lines(path, kinds, what)


@dataclass
class IJBMeta:
    image_names: np.ndarray  # [N] str, relative to loose_crop/
    landmarks: np.ndarray  # [N, 5, 2] float32
    detector_scores: np.ndarray  # [N] float32
    templates: np.ndarray  # [N] int64 template id of each image
    medias: np.ndarray  # [N] int64 media id of each image
    pair_templates: np.ndarray  # [P, 2] int64
    _: KW_ONLY  # at most six fields by position
    pair_labels: np.ndarray  # [P] int64 (1 = same identity)


def meta_paths(root: str | Path, target: str) -> dict[str, Path]:
    meta = Path(root) / "meta"
    prefix = target.lower()
    return {
        "tid_mid": meta / f"{prefix}_face_tid_mid.txt",
        "pairs": meta / f"{prefix}_template_pair_label.txt",
        "landmarks": meta / f"{prefix}_name_5pts_score.txt",
    }


def read_ijb_meta(root: str | Path, target: str) -> IJBMeta:
    """The three meta files of §3.4; image rows of the two per-image files must match name by name."""
    paths = meta_paths(root, target)
    names, templates, medias = read_table(paths["tid_mid"], [str, int, int], "image template media")
    t1, t2, labels = read_table(paths["pairs"], [int, int, int], "template1 template2 label")
    landmark_columns = read_table(
        paths["landmarks"], [str] + [float] * 11, "image, 10 landmark coordinates, score"
    )
    landmark_names = landmark_columns[0]
    if len(landmark_names) != len(names):
        raise TopofrError(
            f"{paths['landmarks']}: {len(landmark_names)} images but {paths['tid_mid'].name} "
            f"lists {len(names)}"
        )
    mismatch = np.flatnonzero(landmark_names != names)
    if len(mismatch):
        row = int(mismatch[0])
        raise TopofrError(
            f"{paths['landmarks']}: row {row + 1} is {landmark_names[row]}, but row {row + 1} of "
            f"{paths['tid_mid'].name} is {names[row]}"
        )
    bad_label = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad_label):
        raise TopofrError(
            f"{paths['pairs']}: row {bad_label[0] + 1}: label {labels[bad_label[0]]}, expected 0 or 1"
        )
    pair_templates = np.stack([t1, t2], axis=1)
    unknown = template_positions(np.unique(templates), pair_templates) < 0
    if unknown.any():
        row, col = np.argwhere(unknown)[0]
        raise TopofrError(
            f"{paths['pairs']}: row {row + 1}: template {pair_templates[row, col]} has no images "
            f"in {paths['tid_mid'].name}"
        )
    return IJBMeta(
        image_names=names,
        landmarks=np.stack(landmark_columns[1:11], axis=1).reshape(-1, 5, 2).astype(np.float32),
        detector_scores=landmark_columns[11].astype(np.float32),
        templates=templates,
        medias=medias,
        pair_templates=pair_templates,
        pair_labels=labels,
    )


# ------------------------------------------------------------------ pooling

LOOKUP_TABLE_MAX = 1 << 26  # id ranges up to this use a direct table instead of a binary search


def template_positions(template_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position (int32) of each id in the sorted unique `template_ids`, −1 for ids not among them.

    IJB template ids are small integers, so a table indexed by id answers 15.7 M look-ups in one
    pass (a binary search per pair is ~10× slower); very sparse id ranges fall back to the search.
    """
    ids = np.asarray(ids, dtype=np.int64)
    low, high = int(template_ids[0]), int(template_ids[-1])
    if high - low < LOOKUP_TABLE_MAX:
        # one −1 slot on each side: np.take(mode="clip") sends every out-of-range id onto them
        table = np.full(high - low + 3, -1, dtype=np.int32)
        table[template_ids - low + 1] = np.arange(len(template_ids), dtype=np.int32)
        return np.take(table, ids - (low - 1), mode="clip")
    found = np.clip(np.searchsorted(template_ids, ids), 0, len(template_ids) - 1)
    return np.where(template_ids[found] == ids, found, -1).astype(np.int32)


class TemplatePooler:
    """Streams image features into template features (§3.4 media then template pooling).

    Each chunk is one sparse [templates × chunk] matrix of weights times the chunk's features.
    """

    def __init__(self, templates: np.ndarray, medias: np.ndarray, embedding_size: int):
        self.template_ids, template_index = np.unique(templates, return_inverse=True)
        _, media_index = np.unique(medias, return_inverse=True)
        group = template_index.astype(np.int64) * (int(media_index.max()) + 1) + media_index
        _, group_index, group_size = np.unique(group, return_inverse=True, return_counts=True)
        self.image_template = template_index.astype(np.int64)
        # 1 / images in the (template, media) group: summing weighted rows = sum of media means
        self.image_weight = (1.0 / group_size[group_index]).astype(np.float32)
        self.sums = np.zeros((len(self.template_ids), embedding_size), dtype=np.float64)
        self.seen = 0

    def add(self, features: np.ndarray | torch.Tensor) -> None:
        """Add the next rows (image order of the meta files) of per-image features."""
        features = np.asarray(features, dtype=np.float32)
        rows = slice(self.seen, self.seen + len(features))
        if rows.stop > len(self.image_template):
            raise ValueError(f"more features than the {len(self.image_template)} images of the meta files")
        weights = scipy.sparse.csr_matrix(
            (self.image_weight[rows], (self.image_template[rows], np.arange(len(features)))),
            shape=(len(self.template_ids), len(features)),
        )
        self.sums += weights @ features
        self.seen += len(features)

    def template_features(self) -> torch.Tensor:
        """L2-normalised template features [T, E] (rows in `template_ids` order), float32."""
        if self.seen != len(self.image_template):
            raise ValueError(f"pooled {self.seen} of {len(self.image_template)} images")
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        return torch.from_numpy((self.sums / np.where(norms > 0, norms, 1.0)).astype(np.float32))


def image_features(
    embeddings: np.ndarray, detector_scores: np.ndarray, *, use_norm_score: bool, use_detector_score: bool
) -> np.ndarray:
    """Per-image features before pooling (§3.4): optionally unit norm, optionally × detector score."""
    features = np.asarray(embeddings, dtype=np.float32)
    if not use_norm_score:  # drop the norm: insightface's use_norm_score=False
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if use_detector_score:
        features = features * np.asarray(detector_scores, dtype=np.float32)[:, None]
    return features


# ------------------------------------------------------------------ scoring


def score_pairs(
    template_features: torch.Tensor,
    template_ids: np.ndarray,
    pair_templates: np.ndarray,
    *,
    block_bytes: int = SCORE_BLOCK_BYTES,
) -> np.ndarray:
    """Cosine score of every pair [P] (features already unit-norm), in pair order, float32."""
    num_templates = len(template_ids)
    sides = [template_positions(template_ids, pair_templates[:, k]) for k in (0, 1)]
    if min(side.min() for side in sides) < 0:
        raise ValueError("pairs refer to templates without features")
    present = []
    for side in sides:
        mask = np.zeros(num_templates, dtype=bool)
        mask[side] = True
        present.append(mask)
    row_side = 0 if present[0].sum() <= present[1].sum() else 1  # fewer rows: fewer GEMM blocks
    row_templates = np.flatnonzero(present[row_side])
    col_templates = np.flatnonzero(present[1 - row_side])
    # position of each template among the rows / columns of the score matrix
    row_pos = np.full(num_templates, -1, dtype=np.int32)
    row_pos[row_templates] = np.arange(len(row_templates), dtype=np.int32)
    col_pos = np.full(num_templates, -1, dtype=np.int32)
    col_pos[col_templates] = np.arange(len(col_templates), dtype=np.int32)
    pair_row = torch.from_numpy(row_pos).index_select(0, torch.from_numpy(sides[row_side])).numpy()
    pair_col = torch.from_numpy(col_pos).index_select(0, torch.from_numpy(sides[1 - row_side])).numpy()
    del sides

    features = template_features.float()
    columns_t = features[torch.from_numpy(col_templates)].T.contiguous()  # [E, C]
    num_cols = len(col_templates)
    block_rows = max(1, block_bytes // (4 * max(1, num_cols)))
    num_blocks = -(-len(row_templates) // block_rows)
    flat_dtype = np.int32 if block_rows * num_cols < 2**31 else np.int64
    if num_blocks == 1:
        order, bounds = None, [0, len(pair_row)]
    else:  # group pairs by row block; block numbers are small ints, which numpy radix-sorts
        block_of_pair = (pair_row // block_rows).astype(np.int16 if num_blocks < 2**15 else np.int64)
        order = np.argsort(block_of_pair, kind="stable")
        bounds = np.searchsorted(block_of_pair[order], np.arange(num_blocks + 1))
    scores = np.empty(len(pair_templates), dtype=np.float32)
    for b in range(num_blocks):
        start = b * block_rows
        rows = torch.from_numpy(row_templates[start : start + block_rows])
        block = (features[rows] @ columns_t).numpy().reshape(-1)  # [b·C] flattened score matrix
        selected = slice(bounds[b], bounds[b + 1]) if order is None else order[bounds[b] : bounds[b + 1]]
        flat = np.multiply(pair_row[selected] - start, num_cols, dtype=flat_dtype)
        flat += pair_col[selected]
        # torch's index_select gathers with all threads (np.take uses one)
        scores[selected] = torch.from_numpy(block).index_select(0, torch.from_numpy(flat)).numpy()
    return scores


# ------------------------------------------------------------------ TAR @ FAR


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn.metrics.roc_curve with its defaults (drop_intermediate=True)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores)
    # Sorting the values alone (no argsort, no label gather) is the cheap part at 15.7 M pairs; the
    # true accepts at a threshold are then counted among the few positives with a binary search.
    descending = np.sort(scores)[::-1]
    last_of_value = np.r_[np.flatnonzero(np.diff(descending)), len(descending) - 1]
    thresholds = descending[last_of_value]
    positives = np.sort(scores[labels])
    tps = (len(positives) - np.searchsorted(positives, thresholds, side="left")).astype(np.float64)
    fps = 1 + last_of_value - tps
    if len(fps) > 2:  # drop points on straight segments, as sklearn does
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far_targets=FAR_TARGETS) -> dict[float, float]:
    """TPR at the ROC point whose FPR is nearest each target; ties go to the later point (largest
    TPR), as insightface's flipped-array `min` does (§3.4)."""
    result = {}
    for far in far_targets:
        gap = np.abs(fpr - far)
        nearest = np.flatnonzero(gap == gap.min())[-1]
        result[far] = float(tpr[nearest])
    return result


def area_under(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
