"""Synthetic faces: generation speed, raw-pixel baseline, and a learnability probe.

    python benchmarks/synthetic.py --identities 1000 --images-per-identity 20          # speed
    python benchmarks/synthetic.py --identities 200 --train-seconds 180                 # learnable?

The probe trains a small CNN (4 strided convolutions, a linear embedding, a CosFace-style head)
on the training identities for a fixed wall-clock budget and evaluates the held-out `.bin` with
the same 10-fold protocol as the pixel baseline. It answers "does identity survive the nuisance",
not "how good is a real backbone".
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from topofr_cli.data import open_dataset
from topofr_cli.data.bins import read_bin
from topofr_cli.data.images import decode_image
from topofr_cli.data.synthetic import generate_synthetic
from topofr_cli.evaluation.baseline import pixel_baseline
from topofr_cli.evaluation.protocol import verification_metrics


def small_cnn(embedding: int = 128) -> nn.Module:
    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
        ]

    return nn.Sequential(
        *block(3, 24),
        *block(24, 48),
        *block(48, 96),
        *block(96, 128),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128 * 7 * 7, embedding),
        nn.BatchNorm1d(embedding),
    )


def to_input(uint8_images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8_images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def probe(dataset_dir: Path, train_seconds: float, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    dataset = open_dataset(dataset_dir)
    images = np.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.from_numpy(dataset.labels)
    model = small_cnn()
    weight = nn.Parameter(torch.randn(dataset.num_classes, 128) * 0.01)
    optimizer = torch.optim.SGD([*model.parameters(), weight], lr=0.1, momentum=0.9, weight_decay=5e-4)
    scale, margin, batch = 30.0, 0.3, 128
    generator = np.random.default_rng(seed)
    start, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - start < train_seconds:
        index = generator.choice(len(images), batch, replace=False)
        x = to_input(images[index])
        flip = torch.from_numpy(generator.random(batch) < 0.5)
        x[flip] = x[flip].flip(3)
        cosine = nn.functional.normalize(model(x)) @ nn.functional.normalize(weight).T
        y = labels[index]
        logits = scale * (cosine - margin * nn.functional.one_hot(y, dataset.num_classes))
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    model.eval()
    pairs = read_bin(dataset_dir / dataset.meta["verification_bins"][0])
    with torch.no_grad():
        x = to_input(np.stack([decode_image(im) for im in pairs.images]))
        embeddings = torch.cat(
            [model(x[i : i + 256]) + model(x[i : i + 256].flip(3)) for i in range(0, len(x), 256)]
        )
    result = verification_metrics(embeddings.numpy(), pairs.issame)
    return {
        "steps": steps,
        "epochs": steps * batch / len(images),
        "final_loss": loss.item(),
        "cnn_accuracy": result.accuracy_mean,
        "cnn_accuracy_std": result.accuracy_std,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--identities", type=int, default=200)
    parser.add_argument("--images-per-identity", type=int, default=20)
    parser.add_argument("--heldout-identities", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--train-seconds", type=float, default=0.0, help="0: skip the CNN probe")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cpu_before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        report = generate_synthetic(
            Path(tmp) / "synthetic",
            identities=args.identities,
            images_per_identity=args.images_per_identity,
            heldout_identities=args.heldout_identities,
            pairs=args.pairs,
            seed=args.seed,
            difficulty=args.difficulty,
            workers=args.workers,
            baseline=pixel_baseline,
        )
        cpu_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(
            a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime
            for a, b in zip(cpu_after, cpu_before, strict=True)
        )
        total = (args.identities + args.heldout_identities) * args.images_per_identity
        print(
            f"generated {total} images in {report.seconds:.1f} s wall, {cpu:.1f} s CPU "
            f"({1000 * cpu / total:.2f} ms CPU per image)"
        )
        print(
            f"pixel baseline: {report.pixel_baseline.accuracy_mean:.4f} ± {report.pixel_baseline.accuracy_std:.4f}"
        )
        if args.train_seconds > 0:
            print(probe(report.out_dir, args.train_seconds, args.seed))


if __name__ == "__main__":
    main()
