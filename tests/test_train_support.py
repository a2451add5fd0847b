"""Shared helpers for the training tests: a tiny packed dataset and a tiny recipe (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topofr_cli.config import load_recipe
from topofr_cli.data.bins import write_bin
from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.packed import PackedWriter


def face_like(rng: np.random.Generator, identity: int, size: int = 112) -> np.ndarray:
    """A 112×112 RGB image whose coarse pattern depends on the identity, plus per-image noise."""
    pattern = np.random.default_rng(1000 + identity).integers(0, 256, (4, 4, 3))
    image = np.kron(pattern, np.ones((size // 4, size // 4, 1)))
    image = image + rng.normal(0, 20, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_tiny_dataset(path: Path, *, classes: int = 4, per_class: int = 16, pairs: int = 20,
                      seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with PackedWriter(path, source="test") as writer:
        for identity in range(classes):
            for k in range(per_class):
                writer.add(encode_jpeg(face_like(rng, identity)), identity, f"id{identity}/{k}")
        extra = {}
        if pairs:
            images, issame = [], []
            for p in range(pairs):
                a = 100 + p % 5
                same = p % 2 == 0
                b = a if same else 100 + (p + 1) % 5
                images += [encode_jpeg(face_like(rng, a)), encode_jpeg(face_like(rng, b))]
                issame.append(same)
            write_bin(writer.tmp_dir / "val.bin", images, np.array(issame))
            extra["verification_bins"] = ["val.bin"]
        writer.finish(extra)
    return path


def tiny_recipe_file(tmp_path: Path, data: Path, output: Path, extra: str = "") -> Path:
    text = f"""
data: {{path: "{data}", batch_size: 8, num_workers: 0}}
model: {{network: mbf, embedding_size: 32}}
head: {{scale: 16.0, m2: 0.2}}
optim: {{lr: 0.05, clip_grad_norm: 5.0}}
schedule: {{epochs: 2, warmup_epochs: 0.5}}
train: {{output: "{output}", precision: fp32, deterministic: true, log_every: 1, save_every: 3, device: cpu}}
{extra}
"""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    load_recipe(recipe)  # fail here, not later, if the helper is wrong
    return recipe
