"""Benchmark: IJB-C-sized template pooling + pair scoring, and the 10-fold protocol on 12,000 pairs,
each next to a straightforward loop implementation measured in the same run.

    python benchmarks/eval_scoring.py [--threads 2] [--images 469375] [--templates 23124]
                                      [--pairs 15658489] [--gallery 3531] [--random-pairs]

Random 512-d features stand in for embeddings. Pair structure: by default like IJB-C 1:1 (first
template from the --gallery enrolled templates, second from the rest); --random-pairs draws both
sides from all templates (the worst case for the block matrix product). The loop baselines are
insightface's `image2template_feature` (one np.where per template and media) and `verification`
(gathering both 512-d rows per pair in chunks of 100,000) and its per-threshold protocol loops;
the pooling and scoring loops run on a subset and are extrapolated linearly (said in the table).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from topofr_cli.evaluation.ijb_protocol import TemplatePooler, roc_curve, score_pairs, tar_at_far
from topofr_cli.evaluation.protocol import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    kfold_splits,
    pair_distances,
    threshold_at_far,
    verification_metrics,
)

console = Console()
FEATURE_CHUNK = 65_536  # images per streamed chunk, as embeddings would arrive


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synthetic_ijb(args, rng):
    # every template gets at least one image; media ids repeat inside templates (video frames)
    templates = np.concatenate(
        [np.arange(args.templates), rng.integers(0, args.templates, args.images - args.templates)]
    )
    templates = rng.permutation(templates) + 1
    medias = rng.integers(0, args.images // 3, args.images)
    if args.random_pairs:
        pairs = rng.integers(1, args.templates + 1, (args.pairs, 2))
    else:
        pairs = np.stack(
            [
                rng.integers(1, args.gallery + 1, args.pairs),
                rng.integers(args.gallery + 1, args.templates + 1, args.pairs),
            ],
            axis=1,
        )
    labels = (rng.random(args.pairs) < 19_557 / 15_658_489).astype(np.int64)
    return templates, medias, pairs, labels


def feature_chunks(num_images, dim, seed):
    rng = np.random.default_rng(seed)
    for start in range(0, num_images, FEATURE_CHUNK):
        yield rng.standard_normal((min(FEATURE_CHUNK, num_images - start), dim), dtype=np.float32)


def pooling_loop(features, templates, medias, unique_templates):
    """insightface image2template_feature, for the given templates only."""
    out = np.zeros((len(unique_templates), features.shape[1]))
    for k, template in enumerate(unique_templates):
        (ind_t,) = np.where(templates == template)
        face_feats, face_medias = features[ind_t], medias[ind_t]
        unique_medias, counts = np.unique(face_medias, return_counts=True)
        media_feats = []
        for media, count in zip(unique_medias, counts, strict=True):
            (ind_m,) = np.where(face_medias == media)
            media_feats.append(
                face_feats[ind_m][0:1] if count == 1 else face_feats[ind_m].mean(0, keepdims=True)
            )
        out[k] = np.sum(np.array(media_feats), axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def scoring_loop(template_feats, template_ids, pairs):
    """insightface verification: chunks of 100,000 pairs, two row gathers per pair."""
    template2id = np.zeros(template_ids.max() + 1, dtype=np.int64)
    template2id[template_ids] = np.arange(len(template_ids))
    scores = np.zeros(len(pairs))
    for start in range(0, len(pairs), 100_000):
        s = slice(start, start + 100_000)
        scores[s] = np.sum(
            template_feats[template2id[pairs[s, 0]]] * template_feats[template2id[pairs[s, 1]]], -1
        )
    return scores


def protocol_loop(dist, issame):
    """insightface calculate_roc + calculate_val: one pass over the pairs per threshold and fold."""

    def rates(threshold, d, same):
        predict = d < threshold
        tp, fp = np.sum(predict & same), np.sum(predict & ~same)
        return tp, fp, (tp + np.sum(~predict & ~same)) / d.size

    accuracy = []
    for fold in kfold_splits(len(dist)):
        train = np.setdiff1d(np.arange(len(dist)), fold)
        best = int(np.argmax([rates(t, dist[train], issame[train])[2] for t in ACCURACY_THRESHOLDS]))
        for t in ACCURACY_THRESHOLDS:
            rates(t, dist[fold], issame[fold])
        accuracy.append(rates(ACCURACY_THRESHOLDS[best], dist[fold], issame[fold])[2])
        far_train = [
            rates(t, dist[train], issame[train])[1] / max(1, np.sum(~issame[train])) for t in VAL_THRESHOLDS
        ]
        threshold = threshold_at_far(np.array(far_train), VAL_THRESHOLDS, 1e-3)
        rates(threshold, dist[fold], issame[fold])
    return float(np.mean(accuracy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--images", type=int, default=469_375)
    parser.add_argument("--templates", type=int, default=23_124)
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--gallery", type=int, default=3_531, help="templates that appear as first of a pair")
    parser.add_argument("--random-pairs", action="store_true", help="both sides drawn from all templates")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--loop-templates", type=int, default=300, help="templates for the pooling loop")
    parser.add_argument("--loop-pairs", type=int, default=1_000_000, help="pairs for the scoring loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    templates, medias, pairs, labels = synthetic_ijb(args, rng)
    rows = []

    t = time.perf_counter()
    pooler = TemplatePooler(templates, medias, args.dim)
    pool_s = time.perf_counter() - t
    for chunk in feature_chunks(args.images, args.dim, seed=1):  # generating the chunk is not timed
        t = time.perf_counter()
        pooler.add(chunk)
        pool_s += time.perf_counter() - t
    t = time.perf_counter()
    template_feats = pooler.template_features()
    pool_s += time.perf_counter() - t
    t = time.perf_counter()
    scores = score_pairs(template_feats, pooler.template_ids, pairs)
    score_s = time.perf_counter() - t
    t = time.perf_counter()
    fpr, tpr, _ = roc_curve(labels, scores)
    tar_at_far(fpr, tpr)
    roc_s = time.perf_counter() - t

    # loop baselines on subsets, extrapolated; also a correctness check on the subset
    features = np.concatenate(list(feature_chunks(args.images, args.dim, seed=1)))
    subset = pooler.template_ids[: args.loop_templates]
    t = time.perf_counter()
    loop_feats = pooling_loop(features, templates, medias, subset)
    loop_pool_s = (time.perf_counter() - t) * len(pooler.template_ids) / len(subset)
    assert np.allclose(loop_feats, template_feats[: len(subset)].numpy(), atol=1e-5)
    del features
    n_loop_pairs = min(args.loop_pairs, len(pairs))
    t = time.perf_counter()
    loop_scores = scoring_loop(template_feats.double().numpy(), pooler.template_ids, pairs[:n_loop_pairs])
    loop_score_s = (time.perf_counter() - t) * len(pairs) / n_loop_pairs
    assert np.allclose(loop_scores, scores[:n_loop_pairs], atol=1e-5)

    scale = f"{len(pooler.template_ids):,} templates, {args.images:,} images"
    rows.append(
        ("template pooling", scale, pool_s, loop_pool_s, f"loop on {len(subset)} templates, extrapolated")
    )
    rows.append(
        (
            "pair scoring",
            f"{len(pairs):,} pairs",
            score_s,
            loop_score_s,
            f"loop on {n_loop_pairs:,} pairs, extrapolated",
        )
    )
    rows.append(("ROC + TAR@FAR", f"{len(pairs):,} scores", roc_s, float("nan"), "(same code path)"))

    issame = rng.random(12_000) < 0.5
    emb = rng.standard_normal((24_000, 128)).astype(np.float32)
    emb[1::2][issame] = emb[0::2][issame] + rng.standard_normal((issame.sum(), 128)).astype(np.float32)
    verification_metrics(emb, issame)  # warm-up
    t = time.perf_counter()
    result = verification_metrics(emb, issame)
    proto_s = time.perf_counter() - t
    dist = pair_distances(emb)
    t = time.perf_counter()
    loop_acc = protocol_loop(dist, issame)
    proto_loop_s = time.perf_counter() - t
    assert abs(loop_acc - result.accuracy_mean) < 1e-12
    rows.append(("10-fold protocol", "12,000 pairs", proto_s, proto_loop_s, "full loop"))

    table = Table(
        title=f"evaluation scoring ({'random' if args.random_pairs else 'IJB-C-like'} pairs, "
        f"{args.threads} torch threads)"
    )
    for column in ("stage", "size", "vectorised s", "loop s", "speed-up", "note"):
        table.add_column(column, justify="left" if column in ("stage", "size", "note") else "right")
    for stage, size, ours, loop, note in rows:
        speedup = f"{loop / ours:.0f}×" if loop == loop else "-"
        table.add_row(stage, size, f"{ours:.2f}", f"{loop:.2f}" if loop == loop else "-", speedup, note)
    console.print(table)
    console.print(
        f"pooling + scoring: {pool_s + score_s:.2f} s (target ≤ 10 s); protocol {proto_s:.3f} s "
        f"(target ≤ 1 s); peak RSS {_peak_rss_gib():.2f} GiB (includes the loop baseline's "
        f"all-images copy)"
    )


if __name__ == "__main__":
    main()
