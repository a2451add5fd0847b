"""Measured effect of three `topofr.compat` differences that need no training (docs/method.md §2).

    python benchmarks/compat_effects.py

1. The w2 gate: the share of samples whose classification loss the reference's integer w2 switches
   off, when p_gt is rounded to fp16 (the reference), bf16, or kept in fp32. Simulated batch: 85,742
   classes (MS1MV2), ArcFace s = 64, m = 0.5, target cosines N(t, 0.05²) per sample, non-target
   cosines N(0, 0.05²) (assumptions: a trained model's batch spreads around a typical target cosine
   and puts unrelated classes near orthogonal). Over four seeds (batches), each with the margin in
   fp32 and, as the reference computes it, in fp16; the range over seeds is printed.
2. Odd batches: the largest |γ_reference − γ_fixed| between the two negation patterns.
3. Per-rank vs global GUM: how far w1 = 2 − γ moves when 8 ranks × 128 fit one GUM each.
Entropies for 2 and 3 are drawn as a mixture: 90 % Exponential(1) ("normal" samples), 10 % U(4, 9).
"""

from __future__ import annotations

import torch

from topofr_cli.hardness.sds import sample_weights, sde_weights

CLASSES, SCALE, MARGIN, SPREAD = 85_742, 64.0, 0.5, 0.05


SEEDS = (0, 1, 2, 3)


def gate_shares(
    target_cos: float, batch: int = 256, seed: int = 0, margin_dtype: torch.dtype = torch.float32
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    others = torch.randn(batch, CLASSES - 1, generator=generator) * SPREAD
    target = (target_cos + SPREAD * torch.randn(batch, 1, generator=generator)).clamp(-1.0, 1.0)
    others, target = others.to(margin_dtype).float(), target.to(margin_dtype)  # the cosines the head sees
    target_logit = torch.cos(torch.acos(target) + MARGIN).float()
    logits = SCALE * torch.cat([target_logit, others], dim=1)
    p_true = torch.softmax(logits, dim=1)[:, 0]
    gamma = torch.full_like(p_true, 0.5)
    shares = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", None)):
        _, w2 = sample_weights(gamma, p_true, compat="reference", softmax_dtype=dtype)
        shares[name] = float((w2 == 0).float().mean())
    shares["p_gt_median"] = float(p_true.median())
    return shares


def _range(runs: list[dict[str, float]], name: str) -> str:
    values = [100 * run[name] for run in runs]
    return f"{min(values):4.1f}–{max(values):4.1f} %"


def entropies(n: int, generator: torch.Generator) -> torch.Tensor:
    normal = torch.empty(n).exponential_(1.0, generator=generator)
    damaged = 4.0 + 5.0 * torch.rand(n, generator=generator)
    return torch.where(torch.rand(n, generator=generator) < 0.1, damaged, normal).double()


def main() -> None:
    print("1. share of samples gated off by the integer w2 (85,742 classes, s 64, m 0.5), % over seeds 0-3")
    for margin_name, margin_dtype in (("fp32", torch.float32), ("fp16 (the reference)", torch.float16)):
        print(f"   margin in {margin_name}; p_gt rounded to fp16 / bf16 / fp32:")
        for t in (0.6, 0.7, 0.75, 0.8, 0.85):
            runs = [gate_shares(t, seed=seed, margin_dtype=margin_dtype) for seed in SEEDS]
            cells = "  ".join(f"{name} {_range(runs, name)}" for name in ("fp16", "bf16", "fp32"))
            print(f"   target cos ~{t:.2f}: {cells}")
    generator = torch.Generator().manual_seed(1)
    p_true = torch.full((513,), 0.5, dtype=torch.float64)
    worst = 0.0
    for _ in range(20):
        h = entropies(513, generator)
        g_ref = sde_weights(h, p_true, compat="reference")[2].gamma
        g_fix = sde_weights(h, p_true, compat="fixed")[2].gamma
        worst = max(worst, float((g_ref - g_fix).abs().max()))
    print(f"2. odd batch n = 513: max |γ_reference − γ_fixed| over 20 batches = {worst:.3f}")
    diffs, means = [], []
    p_true = torch.full((1024,), 0.5, dtype=torch.float64)
    for _ in range(20):
        h = entropies(1024, generator)
        per_rank = sde_weights(h, p_true, compat="fixed", groups=8)[0]
        global_fit = sde_weights(h, p_true, compat="fixed")[0]
        diffs.append(float((per_rank - global_fit).abs().max()))
        means.append(float((per_rank - global_fit).abs().mean()))
    print(
        f"3. 8 ranks × 128: |w1_per_rank − w1_global| mean {sum(means) / len(means):.4f}, "
        f"max {max(diffs):.3f} (w1 ∈ [1, 2])"
    )


if __name__ == "__main__":
    main()
