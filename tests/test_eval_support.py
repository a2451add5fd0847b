"""Shared by the evaluation tests: small backbones whose embeddings really depend on the input.

A freshly initialised deep network in eval mode maps every image to nearly the same vector (its
BatchNorm running statistics do not match the activations), which would let a test pass even if
images were swapped or ignored. Calibrating the statistics on one batch fixes that.
"""

from __future__ import annotations

import torch

from topofr_cli.models import create_backbone


def calibrated_backbone(network: str = "mbf", embedding_size: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_backbone(network, embedding_size)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return model.eval()


def test_calibrated_embeddings_differ_between_images():
    model = calibrated_backbone()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert (out[0] - out[1]).abs().max() > 0.1 * out.abs().max()
