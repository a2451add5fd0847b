"""The §3.3 verification protocol against hand-worked cases and a loop transcription of insightface."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import interpolate
from sklearn.model_selection import KFold

from topofr_cli.evaluation.protocol import (
    kfold_splits,
    pair_distances,
    threshold_at_far,
    verification_metrics,
    verification_metrics_from_distances,
)

# ---------------------------------------------------------------- straightforward transcription


def _accuracy_loop(threshold, dist, issame):
    predict = np.less(dist, threshold)
    tp = np.sum(predict & issame)
    fp = np.sum(predict & ~issame)
    tn = np.sum(~predict & ~issame)
    fn = np.sum(~predict & issame)
    tpr = 0 if tp + fn == 0 else tp / (tp + fn)
    fpr = 0 if fp + tn == 0 else fp / (fp + tn)
    return tpr, fpr, (tp + tn) / dist.size


def _val_far_loop(threshold, dist, issame):
    predict = np.less(dist, threshold)
    n_same, n_diff = np.sum(issame), np.sum(~issame)
    val = np.sum(predict & issame) / n_same if n_same else 0.0
    far = np.sum(predict & ~issame) / n_diff if n_diff else 0.0
    return val, far


def _protocol_loop(dist, issame):
    """insightface's calculate_roc / calculate_val, one threshold at a time, sklearn KFold."""
    thresholds = np.arange(0, 4, 0.01)
    folds = list(KFold(n_splits=10, shuffle=False).split(np.arange(len(dist))))
    accuracy, best, tprs, fprs = [], [], [], []
    for train, test in folds:
        acc_train = [_accuracy_loop(t, dist[train], issame[train])[2] for t in thresholds]
        b = int(np.argmax(acc_train))
        best.append(thresholds[b])
        rates = [_accuracy_loop(t, dist[test], issame[test]) for t in thresholds]
        tprs.append([r[0] for r in rates])
        fprs.append([r[1] for r in rates])
        accuracy.append(_accuracy_loop(thresholds[b], dist[test], issame[test])[2])
    val_thresholds = np.arange(0, 4, 0.001)
    vals, fars = [], []
    for train, test in folds:
        far_train = np.array([_val_far_loop(t, dist[train], issame[train])[1] for t in val_thresholds])
        if far_train.max() >= 1e-3:
            # insightface's interp1d raises on repeated FAR: interpolate between the corners of the
            # step curve (last threshold of the lower FAR value, first threshold of the higher one)
            first, last = {}, {}
            for f, t in zip(far_train, val_thresholds, strict=True):
                first.setdefault(f, t)
                last[f] = t
            xs = np.array(sorted(last))
            if 1e-3 in last:
                threshold = last[1e-3]
            else:
                hi = int(np.searchsorted(xs, 1e-3))
                lo_x, hi_x = xs[hi - 1], xs[hi]
                f = interpolate.interp1d([lo_x, hi_x], [last[lo_x], first[hi_x]], kind="slinear")
                threshold = float(f(1e-3))
        else:
            threshold = 0.0
        v, fa = _val_far_loop(threshold, dist[test], issame[test])
        vals.append(v)
        fars.append(fa)
    return {
        "accuracy": np.array(accuracy),
        "best": np.array(best),
        "tpr": np.mean(tprs, 0),
        "fpr": np.mean(fprs, 0),
        "val": np.mean(vals),
        "val_std": np.std(vals),
        "far": np.mean(fars),
    }


# ---------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize("n", [10, 23, 101, 6000])
def test_fold_split_matches_sklearn_kfold(n):
    ours = kfold_splits(n)
    theirs = [test for _, test in KFold(n_splits=10, shuffle=False).split(np.arange(n))]
    assert len(ours) == 10
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fold_split_sizes_hand_worked():
    assert [len(f) for f in kfold_splits(23)] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        kfold_splits(9)


def test_perfectly_separable_pairs_pick_the_first_maximising_threshold():
    issame = np.tile([True, False], 10)
    dist = np.where(issame, 0.5, 1.5)
    result = verification_metrics_from_distances(dist, issame)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    # every threshold in (0.5, 1.5] is perfect; np.argmax takes the first: 0.51
    np.testing.assert_allclose(result.best_thresholds, 0.51)
    assert result.auc == pytest.approx(1.0)
    # 9 training different pairs: FAR jumps 0 -> 1 between t=1.5 and 1.501, so the interpolated
    # threshold lands just above 1.5 and the held-out different pair at 1.5 is accepted
    assert result.val == 1.0 and result.far == 1.0


def test_one_misclassified_pair_costs_its_fold_half_accuracy():
    issame = np.tile([True, False], 10)
    dist = np.where(issame, 0.5, 1.5)
    dist[0] = 2.0  # a same pair far away, in fold 0 (pairs 0 and 1)
    result = verification_metrics_from_distances(dist, issame)
    np.testing.assert_allclose(result.fold_accuracies, [0.5] + [1.0] * 9)
    assert result.accuracy_mean == pytest.approx(0.95)
    assert result.accuracy_std == pytest.approx(0.15)  # sqrt((0.45² + 9·0.05²) / 10)
    np.testing.assert_allclose(result.best_thresholds, 0.51)


def test_threshold_at_far_collapses_repeated_far_values():
    far = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    thresholds = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    # the step curve's corners: FAR 0 up to t=1, jumps to 0.5 at t=2, stays to t=3, 1 at t=4
    assert threshold_at_far(far, thresholds, 0.25) == pytest.approx(1.5)
    assert threshold_at_far(far, thresholds, 0.5) == pytest.approx(3.0)  # loosest with FAR 0.5
    assert threshold_at_far(far, thresholds, 0.0) == pytest.approx(1.0)
    assert threshold_at_far(far, thresholds, 0.75) == pytest.approx(3.5)
    assert threshold_at_far(far, thresholds, 2.0) == 0.0  # never reached: insightface's 0


def test_val_at_far_with_a_repeated_far_plateau():
    # 2,000 different pairs and 2,000 same pairs; FAR on 9 training folds jumps by 1/1800 per pair
    rng = np.random.default_rng(3)
    n = 4000
    issame = np.arange(n) % 2 == 0
    dist = np.where(issame, rng.uniform(0.2, 1.0, n), rng.uniform(0.9, 3.0, n))
    result = verification_metrics_from_distances(dist, issame)
    loop = _protocol_loop(dist, issame)
    assert result.val == pytest.approx(loop["val"], abs=1e-12)
    assert result.far == pytest.approx(loop["far"], abs=1e-12)
    assert 0.0 < result.val < 1.0 and result.far <= 2e-3


def test_pair_distances_normalise_first():
    emb = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(pair_distances(emb), [2.0, 0.0])


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        verification_metrics(np.zeros((5, 4)), np.zeros(3, bool))


# ---------------------------------------------------------------- against the transcription


@pytest.mark.parametrize("seed,n", [(0, 600), (1, 1237), (2, 57)])
def test_matches_loop_transcription_on_random_embeddings(seed, n):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    left = rng.normal(size=(n, 16))
    right = np.where(issame[:, None], left + rng.normal(scale=0.8, size=(n, 16)), rng.normal(size=(n, 16)))
    emb = np.empty((2 * n, 16))
    emb[0::2], emb[1::2] = left, right
    result = verification_metrics(emb.astype(np.float32), issame)
    loop = _protocol_loop(pair_distances(emb.astype(np.float32)), issame)
    np.testing.assert_allclose(result.fold_accuracies, loop["accuracy"], atol=1e-12)
    np.testing.assert_allclose(result.best_thresholds, loop["best"])
    np.testing.assert_allclose(result.tpr, loop["tpr"], atol=1e-12)
    np.testing.assert_allclose(result.fpr, loop["fpr"], atol=1e-12)
    assert result.val == pytest.approx(loop["val"], abs=1e-12)
    assert result.val_std == pytest.approx(loop["val_std"], abs=1e-12)
    assert result.far == pytest.approx(loop["far"], abs=1e-12)
    assert 0.5 < result.accuracy_mean <= 1.0
    assert 0.5 < result.auc <= 1.0


def test_auc_is_the_area_of_the_exact_curve_even_when_the_threshold_grid_cannot_see_it():
    """A near-degenerate model: every squared distance below the grid's first step (0.01). The grid's
    mean ROC has one corner (area 0.5); the exact curve, the one the ROC figure draws, separates the pairs."""
    from sklearn.metrics import roc_auc_score

    from topofr_cli.plots.roc import exact_verification_roc

    rng = np.random.default_rng(3)
    issame = np.arange(600) % 2 == 0
    dist = np.where(issame, rng.uniform(0.0, 0.006, 600), rng.uniform(0.002, 0.008, 600))
    result = verification_metrics_from_distances(dist, issame)
    assert result.auc == pytest.approx(roc_auc_score(issame, -dist), abs=1e-12)
    fpr, tpr = exact_verification_roc(dist, issame)
    assert result.auc == pytest.approx(float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)), abs=1e-12)
    x, y = np.append(result.fpr, 1.0), np.append(result.tpr, 1.0)  # the grid's mean ROC, closed at (1, 1)
    order = np.argsort(x, kind="stable")
    grid_area = float(np.sum(np.diff(x[order]) * (y[order][1:] + y[order][:-1]) / 2))
    assert abs(grid_area - 0.5) < 0.02 and result.auc > 0.7  # what the grid's area would have said
