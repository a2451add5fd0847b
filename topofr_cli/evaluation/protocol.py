"""The 10-fold verification protocol of insightface's `eval/verification.py` (docs/method.md §3.3).

Every quantity is a count of pairs whose squared distance is below a threshold, so the distances
are sorted once per fold and each count over all thresholds is one `np.searchsorted` call instead of
one pass over the pairs per threshold.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import numpy as np

from topofr_cli.data.folds import kfold_splits

# docs/method.md §3.3: accuracy thresholds 0, 0.01, …, 3.99; VAL thresholds 0, 0.001, …, 3.999.
# Built with np.arange exactly like insightface so the float threshold values are bit-identical.
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3


@dataclass
class VerificationResult:
    """Outcome of the protocol on one set of pairs."""

    num_pairs: int
    accuracy_mean: float
    accuracy_std: float  # population std over folds (np.std), as insightface reports it
    fold_accuracies: np.ndarray  # [folds]
    best_thresholds: np.ndarray  # [folds] threshold chosen on the 9 training folds
    val: float  # VAL (true accept rate) at FAR_TARGET, mean over folds
    _: KW_ONLY  # at most six fields by position
    val_std: float
    far: float  # the FAR actually reached on the held-out folds, mean over folds
    auc: float  # area under the exact ROC (every distance a threshold), the curve the figure draws
    tpr: np.ndarray  # [thresholds] mean over held-out folds
    fpr: np.ndarray  # [thresholds]
    thresholds: np.ndarray  # [thresholds]
    distances: np.ndarray | None = None  # [pairs] squared L2 distances, for the exact ROC
    issame: np.ndarray | None = None  # [pairs]
    # Fewest impostor pairs any fold's VAL threshold was set on (the other 9 folds' different pairs).
    threshold_impostors: int = 0
    mean_cosine: float | None = None  # between embeddings of different images (evaluation.degeneracy)
    degenerate: bool = False

    @property
    def val_resolvable(self) -> bool:
        """Whether FAR_TARGET is at least one impostor pair of the set the VAL threshold is chosen on;
        below that the threshold, and so VAL, comes from the interpolation, not from the data."""
        return self.threshold_impostors * FAR_TARGET >= 1.0

    @property
    def best_threshold(self) -> float:
        """Mean over folds of the per-fold best threshold (squared L2 distance)."""
        return float(np.mean(self.best_thresholds))

    def summary(self) -> dict[str, float | int | bool | None]:
        """The scalar numbers, for tables and CSV rows."""
        return {
            "pairs": self.num_pairs,
            "accuracy": self.accuracy_mean,
            "accuracy_std": self.accuracy_std,
            "best_threshold": self.best_threshold,
            "val_at_far_1e-3": self.val,
            "val_std": self.val_std,
            "far": self.far,
            "auc": self.auc,
            "threshold_impostors": self.threshold_impostors,
            "val_resolvable": self.val_resolvable,
            "mean_cosine": self.mean_cosine,
            "degenerate": self.degenerate,
        }


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of pair i = images (2i, 2i+1), after L2 normalisation (§3.3)."""
    emb = l2_normalize(np.asarray(embeddings, dtype=np.float64))
    diff = emb[0::2] - emb[1::2]
    return np.sum(np.square(diff), axis=1)


def _counts_below(
    dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers of same / different pairs with dist < t (insightface's `np.less`) for every t."""
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    return (
        np.searchsorted(same, thresholds, side="left"),
        np.searchsorted(diff, thresholds, side="left"),
    )


def _fold_counts(dist, issame, folds, thresholds):
    """Per-fold counts [folds, thresholds] of accepted same pairs and accepted different pairs."""
    accepted_same = np.empty((len(folds), len(thresholds)), dtype=np.int64)
    accepted_diff = np.empty_like(accepted_same)
    for k, fold in enumerate(folds):  # 10 iterations; the thresholds are vectorised
        accepted_same[k], accepted_diff[k] = _counts_below(dist[fold], issame[fold], thresholds)
    return accepted_same, accepted_diff


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (insightface's rule for TPR and FPR of an empty class)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def threshold_at_far(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at which the (non-decreasing) FAR curve reaches `target`, linearly interpolated.

    insightface calls `interp1d(far, thresholds, kind="slinear")`, which on current scipy raises
    when FAR repeats, and FAR repeats whenever a threshold step accepts no new different pair.
    A run of equal FAR values is a flat step of the curve from its first to its last threshold, so
    the curve is kept as its corner points: a target strictly between two distinct FAR values is
    interpolated between the *last* threshold of the lower run and the *first* threshold of the
    higher one (where the FAR actually jumps); a target equal to a FAR value gets the last
    threshold of its run (the loosest threshold with that FAR). Without repeats this is exactly
    insightface's interpolation. If FAR never reaches the target the threshold is 0 (insightface).
    """
    if far.max() < target:
        return 0.0
    changes = np.diff(far) != 0
    first_of_run = np.flatnonzero(np.concatenate([[True], changes]))
    last_of_run = np.flatnonzero(np.concatenate([changes, [True]]))
    values = far[first_of_run]
    j = int(np.searchsorted(values, target, side="left"))
    if values[j] == target:
        return float(thresholds[last_of_run[j]])
    if j == 0:  # target below the smallest FAR: insightface's interp1d would raise; take the start
        return float(thresholds[0])
    low_far, high_far = values[j - 1], values[j]
    low_t, high_t = thresholds[last_of_run[j - 1]], thresholds[first_of_run[j]]
    return float(low_t + (target - low_far) * (high_t - low_t) / (high_far - low_far))


def exact_auc(dist: np.ndarray, issame: np.ndarray) -> float:
    """Area under the exact ROC of squared distances (a pair is accepted below a threshold): the
    probability that a genuine pair is closer than an impostor pair, ties counted half (Mann-Whitney).
    The mean ROC over the 400-threshold grid is coarse where the scores bunch (0.50 against 0.715 on a
    near-degenerate model), so the grid's area is not reported."""
    from scipy.stats import rankdata

    genuine = np.asarray(issame, dtype=bool)
    positives, negatives = int(genuine.sum()), int((~genuine).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(-np.asarray(dist, dtype=np.float64))  # higher rank: closer pair
    return float((ranks[genuine].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def verification_metrics_from_distances(dist: np.ndarray, issame: np.ndarray) -> VerificationResult:
    """The protocol on precomputed squared distances [N] (§3.3)."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if dist.shape != issame.shape or dist.ndim != 1:
        raise ValueError(f"distances {dist.shape} and labels {issame.shape} must be equal-length vectors")
    n = len(dist)
    folds = kfold_splits(n)
    fold_same = np.array([issame[f].sum() for f in folds])
    fold_diff = np.array([len(f) for f in folds]) - fold_same
    fold_size = fold_same + fold_diff

    # Accuracy: best threshold on the 9 training folds, accuracy on the held-out one.
    acc_same, acc_diff = _fold_counts(dist, issame, folds, ACCURACY_THRESHOLDS)
    train_same = acc_same.sum(0, keepdims=True) - acc_same
    train_diff = acc_diff.sum(0, keepdims=True) - acc_diff
    train_rejected_diff = (fold_diff.sum() - fold_diff)[:, None] - train_diff
    # correct = TP + TN; the training-set size is the same for every threshold, so the integer
    # count ranks thresholds exactly as the accuracy does (np.argmax: first maximum wins)
    best_index = np.argmax(train_same + train_rejected_diff, axis=1)
    rows = np.arange(len(folds))
    test_correct = acc_same[rows, best_index] + fold_diff - acc_diff[rows, best_index]
    fold_accuracies = test_correct / fold_size
    tpr = _safe_ratio(acc_same, fold_same[:, None]).mean(0)
    fpr = _safe_ratio(acc_diff, fold_diff[:, None]).mean(0)

    # VAL@FAR: threshold interpolated at the target FAR on the training folds, VAL on the test fold.
    val_same, val_diff = _fold_counts(dist, issame, folds, VAL_THRESHOLDS)
    far_train = _safe_ratio(val_diff.sum(0, keepdims=True) - val_diff, (fold_diff.sum() - fold_diff)[:, None])
    vals = np.empty(len(folds))
    fars = np.empty(len(folds))
    for k, fold in enumerate(folds):
        threshold = threshold_at_far(far_train[k], VAL_THRESHOLDS, FAR_TARGET)
        accepted = dist[fold] < threshold
        vals[k] = _safe_ratio(np.sum(accepted & issame[fold]), fold_same[k])
        fars[k] = _safe_ratio(np.sum(accepted & ~issame[fold]), fold_diff[k])

    return VerificationResult(
        num_pairs=n,
        accuracy_mean=float(np.mean(fold_accuracies)),
        accuracy_std=float(np.std(fold_accuracies)),
        fold_accuracies=fold_accuracies,
        best_thresholds=ACCURACY_THRESHOLDS[best_index],
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        auc=exact_auc(dist, issame),
        tpr=tpr,
        fpr=fpr,
        thresholds=ACCURACY_THRESHOLDS.copy(),
        distances=dist,
        issame=issame,
        threshold_impostors=int((fold_diff.sum() - fold_diff).min()),
    )


def verification_metrics(embeddings: np.ndarray, issame: np.ndarray) -> VerificationResult:
    """10-fold verification metrics of embeddings [2N, E] (pair i = rows 2i, 2i+1), labels [N].

    Embeddings are L2-normalised here (a no-op if they already are), so raw flip-summed
    backbone outputs can be passed directly (§3.3).
    """
    embeddings = np.asarray(embeddings)
    issame = np.asarray(issame, dtype=bool)
    if embeddings.ndim != 2 or embeddings.shape[0] != 2 * len(issame):
        raise ValueError(f"expected embeddings [2N, E] for N={len(issame)} pairs, got {embeddings.shape}")
    return verification_metrics_from_distances(pair_distances(embeddings), issame)
