"""Partial FC: single-process equivalence with F.cross_entropy, class sampling, and a real
two-process gloo run compared with a single-process computation on the full batch."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from topofr_cli.errors import TopofrError
from topofr_cli.models.heads import CombinedMarginHead
from topofr_cli.models.partial_fc import PartialFC, shard_bounds

torch.set_num_threads(1)

EMBEDDING = 8
CLASSES = 7  # odd, so two ranks hold 4 and 3 classes
BATCH_PER_RANK = 3


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(CLASSES, EMBEDDING, generator=generator)
    embeddings = torch.randn(2 * BATCH_PER_RANK, EMBEDDING, generator=generator) * 3
    labels = torch.tensor([0, 6, 3, 3, 4, 1])
    loss_weights = torch.rand(2 * BATCH_PER_RANK, generator=generator) + 0.5
    return weight, embeddings, labels, loss_weights


def _head() -> CombinedMarginHead:
    return CombinedMarginHead(scale=16, m2=0.5)


def _independent(weight, embeddings, labels):
    """Margin logits → softmax quantities with plain torch ops on the full problem."""
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=1).T
    logits = _head()(cosine, labels)
    probs = torch.softmax(logits, dim=1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    p_true = probs.gather(1, labels[:, None]).squeeze(1)
    entropy = -(probs * torch.log(probs + 1e-5)).sum(dim=1)
    return ce, p_true, entropy


def test_shard_bounds_cover_classes_evenly():
    bounds = [shard_bounds(10, 4, r) for r in range(4)]
    assert bounds == [(0, 3), (3, 3), (6, 2), (8, 2)]


def test_single_process_matches_cross_entropy_and_softmax():
    weight, embeddings, labels, loss_weights = _problem()
    classifier = PartialFC(EMBEDDING, CLASSES, _head())
    classifier.load_full_weight(weight)
    emb = embeddings.clone().requires_grad_(True)
    out = classifier(emb, labels)
    (out.ce * loss_weights).sum().backward()

    emb_ref = embeddings.clone().requires_grad_(True)
    weight_ref = weight.clone().requires_grad_(True)
    ce, p_true, entropy = _independent(weight_ref, emb_ref, labels)
    (ce * loss_weights).sum().backward()

    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.p_true, p_true)
    torch.testing.assert_close(out.entropy, entropy)
    assert torch.equal(out.labels, labels)
    assert not out.p_true.requires_grad and not out.entropy.requires_grad
    torch.testing.assert_close(emb.grad, emb_ref.grad)
    torch.testing.assert_close(classifier.weight.grad, weight_ref.grad)


def test_ce_stays_finite_when_true_probability_underflows():
    classifier = PartialFC(2, 2, CombinedMarginHead(scale=64, m2=0.5))
    classifier.load_full_weight(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    out = classifier(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    # The true class sits at cos = −1: ce = log(1 + e^{128 − logit}) ≈ 64·(1 + 1 + fallback shift).
    assert torch.isfinite(out.ce).all() and out.ce.item() > 100
    assert out.p_true.item() == 0.0


def test_sampling_keeps_positives_and_trains_only_sampled_rows():
    torch.manual_seed(3)
    classes, batch = 40, 6
    classifier = PartialFC(EMBEDDING, classes, _head(), sample_rate=0.25).train()
    weight = torch.randn(classes, EMBEDDING)
    classifier.load_full_weight(weight)
    embeddings = torch.randn(batch, EMBEDDING)
    labels = torch.tensor([5, 5, 17, 39, 0, 22])
    out = classifier(embeddings, labels)
    out.ce.sum().backward()

    touched = (classifier.weight.grad.abs().sum(dim=1) > 0).nonzero().squeeze(1)
    assert len(touched) == 10  # 0.25 · 40 classes; 5 positives + 5 random negatives
    assert set(labels.tolist()) <= set(touched.tolist())
    # Loss and probabilities are those of a softmax over the sampled columns only.
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(weight[touched], dim=1).T
    sub_labels = torch.searchsorted(touched, labels)
    logits = _head()(cosine, sub_labels)
    torch.testing.assert_close(out.ce, F.cross_entropy(logits, sub_labels, reduction="none"))
    torch.testing.assert_close(out.p_true, torch.softmax(logits, 1).gather(1, sub_labels[:, None]).squeeze(1))

    classifier.eval()  # evaluation scores every class, so the true class gets a smaller share
    full = classifier(embeddings, labels)
    assert (full.p_true < out.p_true).all()


def test_full_weight_round_trip_and_shape_check():
    classifier = PartialFC(EMBEDDING, CLASSES, _head())
    weight = torch.randn(CLASSES, EMBEDDING)
    classifier.load_full_weight(weight)
    assert torch.equal(classifier.full_weight(), weight)
    with pytest.raises(TopofrError, match=r"\(7, 8\)"):
        classifier.load_full_weight(torch.randn(CLASSES + 1, EMBEDDING))


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        weight, embeddings, labels, loss_weights = _problem()
        classifier = PartialFC(EMBEDDING, CLASSES, _head())
        classifier.load_full_weight(weight)
        rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
        local = embeddings[rows].clone().requires_grad_(True)
        out = classifier(local, labels[rows])
        (out.ce * loss_weights).sum().backward()

        sampled = PartialFC(EMBEDDING, 40, _head(), sample_rate=0.1).train()
        sampled_out = sampled(local.detach(), torch.tensor([[3, 21, 39], [20, 19, 2]])[rank])
        sampled_out.ce.sum().backward()
        torch.save(
            {
                "ce": out.ce.detach(),
                "p_true": out.p_true,
                "entropy": out.entropy,
                "labels": out.labels,
                "embedding_grad": local.grad,
                "weight_grad": classifier.weight.grad,
                "shard": (classifier.class_start, classifier.num_local),
                "full_weight": classifier.full_weight(),
                "sampled_rows": (sampled.weight.grad.abs().sum(1) > 0).nonzero().squeeze(1)
                + sampled.class_start,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    world_size = 2
    mp.spawn(_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]

    weight, embeddings, labels, loss_weights = _problem()
    emb_ref = embeddings.clone().requires_grad_(True)
    weight_ref = weight.clone().requires_grad_(True)
    ce, p_true, entropy = _independent(weight_ref, emb_ref, labels)
    (ce * loss_weights).sum().backward()

    assert [r["shard"] for r in results] == [(0, 4), (4, 3)]
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["ce"], ce.detach())
        torch.testing.assert_close(result["p_true"], p_true.detach())
        torch.testing.assert_close(result["entropy"], entropy.detach())
        assert torch.equal(result["labels"], labels)
        rows = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
        torch.testing.assert_close(result["embedding_grad"], emb_ref.grad[rows])
        start, count = result["shard"]
        torch.testing.assert_close(result["weight_grad"], weight_ref.grad[start : start + count])
        torch.testing.assert_close(result["full_weight"], weight)

    # Sampling across ranks: each rank's shard of 20 classes keeps every positive it owns and
    # scores k = max(0.1·20, global batch 6) = 6 classes.
    for rank, result in enumerate(results):
        owned = {c for c in (3, 21, 39, 20, 19, 2) if 20 * rank <= c < 20 * (rank + 1)}
        assert owned <= set(result["sampled_rows"].tolist())
        assert len(result["sampled_rows"]) == 6
