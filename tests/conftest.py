"""Fixtures shared by the test modules: a tiny packed training set, a tiny recipe, calibrated backbones.

Each fixture hands out a factory, so a test (or a module-scoped fixture) can build as many as it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from topofr_cli.config import load_recipe
from topofr_cli.data.bins import write_bin
from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.packed import PackedWriter
from topofr_cli.models import create_backbone


def _face_like(rng: np.random.Generator, identity: int, size: int = 112) -> np.ndarray:
    """A 112×112 RGB image whose coarse pattern depends on the identity, plus per-image noise."""
    pattern = np.random.default_rng(1000 + identity).integers(0, 256, (4, 4, 3))
    image = np.kron(pattern, np.ones((size // 4, size // 4, 1)))
    image = image + rng.normal(0, 20, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _make_tiny_dataset(
    path: Path, *, classes: int = 4, per_class: int = 16, pairs: int = 20, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    with PackedWriter(path, source="test") as writer:
        for identity in range(classes):
            for k in range(per_class):
                writer.add(encode_jpeg(_face_like(rng, identity)), identity, f"id{identity}/{k}")
        extra = {}
        if pairs:
            images, issame = [], []
            for p in range(pairs):
                a = 100 + p % 5
                same = p % 2 == 0
                b = a if same else 100 + (p + 1) % 5
                images += [encode_jpeg(_face_like(rng, a)), encode_jpeg(_face_like(rng, b))]
                issame.append(same)
            write_bin(writer.tmp_dir / "val.bin", images, np.array(issame))
            extra["verification_bins"] = ["val.bin"]
        writer.finish(extra)
    return path


def _tiny_recipe_file(tmp_path: Path, data: Path, output: Path, extra: str = "") -> Path:
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


def _calibrated_backbone(network: str = "mbf", embedding_size: int = 32, seed: int = 0) -> torch.nn.Module:
    """A small backbone whose embeddings really depend on the input.

    A freshly initialised deep network in eval mode maps every image to nearly the same vector (its
    BatchNorm running statistics do not match the activations), which would let a test pass even if
    images were swapped or ignored. Calibrating the statistics on one batch fixes that.
    """
    torch.manual_seed(seed)
    model = create_backbone(network, embedding_size)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="session")
def make_tiny_dataset():
    """`make_tiny_dataset(path, *, classes=4, per_class=16, pairs=20, seed=0) -> path`: a packed set of
    face-like 112×112 images, with a `val.bin` of held-out identities when `pairs` > 0."""
    return _make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_recipe_file():
    """`tiny_recipe_file(tmp_path, data, output, extra="") -> recipe.yaml`: two CPU fp32 epochs of mbf."""
    return _tiny_recipe_file


@pytest.fixture(scope="session")
def calibrated_backbone():
    """`calibrated_backbone(network="mbf", embedding_size=32, seed=0)`: see `_calibrated_backbone`."""
    return _calibrated_backbone
