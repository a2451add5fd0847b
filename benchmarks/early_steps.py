"""The first training steps, step by step: does the embedding collapse, and what drives it?

    python benchmarks/early_steps.py recipes/quickstart_topofr.yaml --steps 12 --out runs/early/mbf_fixed.csv
    python benchmarks/early_steps.py recipes/quickstart_topofr.yaml --steps 12 --set topofr.compat=reference
    python benchmarks/early_steps.py recipes/quickstart_topofr.yaml --steps 8 --no-verify --set model.network=r18 \
        --set model.embedding_size=512

docs/method.md §5 lists the exact commands behind its numbers (each run through benchmarks/record.py,
outputs in benchmarks/results/early_steps/, figures printed by benchmarks/early_steps_summary.py).

Builds what `topofr train` builds (topofr_cli.engine.build: backbone with its compat options, Partial
FC, objective, optimizers, TrainStep) and after every step records: the classification loss, the PTSA term and
α·PTSA, λ, the gradient norm, the mean |weight| of the embedding BatchNorm, and on a fixed probe of
64 held-out images (eval mode, as verification sees them) the mean cosine between different images
and the mean embedding norm, and in train mode (the probe's own batch statistics) the cosine and the
effective number of dimensions of the cloud (participation ratio). It ends with the verification accuracy on the dataset's `.bin`.
A recipe's synthetic set is generated at `data.path` first if it is missing, as `topofr train` does.
Run it at `nice` with OMP_NUM_THREADS=1 on a shared CPU.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from topofr_cli.config import load_recipe
from topofr_cli.data import open_dataset
from topofr_cli.data.bins import read_bin
from topofr_cli.data.images import decode_image
from topofr_cli.data.loader import make_train_loader, normalize
from topofr_cli.data.synthetic import generate_synthetic
from topofr_cli.engine.build import build
from topofr_cli.engine.distributed import setup_distributed
from topofr_cli.evaluation.verification import evaluate_bin
from topofr_cli.models.iresnet import frozen_batchnorm_statistics

PROBE_IMAGES = 64


def mean_offdiagonal_cosine(z: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(z.float(), dim=1)
    cos = unit @ unit.T
    n = cos.shape[0]
    return float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))


def participation_ratio(z: torch.Tensor) -> float:
    """Effective number of dimensions of a cloud, (Σ e)² / Σ e² over its covariance eigenvalues e:
    E for an isotropic cloud, 1 for points on a line (dimensional collapse)."""
    centred = z.double() - z.double().mean(dim=0)
    eig = torch.linalg.eigvalsh(centred.T @ centred / z.shape[0]).clamp_min(0)
    return float(eig.sum() ** 2 / (eig**2).sum())


@torch.no_grad()
def probe(backbone: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Mean cosine between different probe images and mean embedding norm in eval mode (running
    BatchNorm statistics, what verification sees), and the cosine in train mode (the probe batch's
    own statistics; running statistics left untouched)."""
    backbone.eval()
    z = backbone(images).float()
    backbone.train()
    with frozen_batchnorm_statistics(backbone):
        z_train = backbone(images)
    return {
        "probe_cos": mean_offdiagonal_cosine(z),
        "probe_norm": float(z.norm(dim=1).mean()),
        "probe_cos_batchstats": mean_offdiagonal_cosine(z_train),
        "probe_dims_batchstats": participation_ratio(z_train),
    }


def grad_norm(params: Any) -> float:
    """Norm of the gradients the optimizer used (after clipping)."""
    return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))


def embedding_scale(backbone: torch.nn.Module) -> float:
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    return float(norms[-1].weight.detach().abs().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    ctx = setup_distributed("cpu")
    spec = recipe.data.synthetic
    if spec is not None and not Path(recipe.data.path).exists():
        # As `topofr train` does on first use, so the commands in docs/method.md §5 run from a clean
        # checkout (the set is deterministic in its seed).
        generate_synthetic(
            recipe.data.path,
            identities=spec.identities,
            images_per_identity=spec.images_per_identity,
            heldout_identities=spec.heldout_identities,
            pairs=spec.pairs,
            seed=spec.seed,
        )
    dataset = open_dataset(recipe.data.path)
    bin_path = Path(dataset.path) / dataset.meta["verification_bins"][0]
    pairs = read_bin(bin_path)
    probe_images = normalize(
        torch.from_numpy(np.stack([decode_image(b) for b in pairs.images[:PROBE_IMAGES]]))
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    training = build(recipe, ctx, num_classes=dataset.num_classes)  # what `topofr train` builds
    backbone, step_fn = training.parts.backbone, training.step
    optimizers = [training.parts.backbone_optimizer, training.parts.classifier_optimizer]
    loader = make_train_loader(
        dataset, recipe.data.batch_size, num_workers=0, seed=recipe.train.seed, drop_last=True
    )
    schedule = training.schedule(len(loader))
    rows = []
    rows.append({"step": 0, **probe(backbone, probe_images), "emb_bn_weight": embedding_scale(backbone)})
    batches = iter(loader)
    for step in range(args.steps):
        images, labels = next(batches)
        for optimizer in optimizers:
            schedule.apply(optimizer, step)
        result = step_fn(images, labels, step)
        terms = {k: float(v) for k, v in result.terms.items()}
        alpha_topo = recipe.topofr.ptsa.alpha * terms["loss_topo"] if "loss_topo" in terms else float("nan")
        rows.append(
            {
                "step": step + 1,
                "loss": float(result.loss),
                **terms,
                "alpha_topo": alpha_topo,
                "grad_norm": float(result.grad_norm),
                "backbone_grad_used": grad_norm(backbone.parameters()),
                "classifier_grad_used": grad_norm(step_fn.classifier.parameters()),
                **probe(backbone, probe_images),
                "emb_bn_weight": embedding_scale(backbone),
            }
        )
        print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
            flush=True,
        )
    if not args.no_verify:
        result = evaluate_bin(backbone, bin_path, batch_size=64)
        print(
            f"verification after {args.steps} steps: {100 * result.accuracy_mean:.2f} ± "
            f"{100 * result.accuracy_std:.2f}",
            flush=True,
        )
        rows[-1]["val_acc"] = result.accuracy_mean
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with args.out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
