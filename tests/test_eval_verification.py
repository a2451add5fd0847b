"""embed_images and evaluate_bin on tiny .bin files written with bins.write_bin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from topofr_cli.config import Recipe
from topofr_cli.data.bins import write_bin
from topofr_cli.data.images import encode_jpeg
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.embed import embed_images
from topofr_cli.evaluation.protocol import verification_metrics
from topofr_cli.evaluation.verification import default_verification_bins, evaluate_bin


class ChannelMeans(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class LeftHalfMeans(torch.nn.Module):
    """Not mirror-symmetric, so the flip changes the embedding."""

    def forward(self, x):
        return x[:, :, :, : x.shape[3] // 2].mean(dim=(2, 3))


def _png(rgb: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _random_images(n, seed=0, size=112):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_embed_images_flip_sum_of_channel_means_by_hand():
    images = np.stack(_random_images(5)).transpose(0, 3, 1, 2)
    batches = [torch.from_numpy(images[:3]), torch.from_numpy(images[3:])]
    out = embed_images(ChannelMeans(), batches, flip=True, device="cpu")
    expected = 2 * ((images.astype(np.float64) / 255 - 0.5) / 0.5).mean(axis=(2, 3))
    assert out.dtype == np.float32 and out.shape == (5, 3)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    no_flip = embed_images(ChannelMeans(), batches, flip=False, device="cpu")
    np.testing.assert_allclose(no_flip, expected / 2, atol=1e-5)


def test_embed_images_restores_training_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), ChannelMeans()).train()
    embed_images(model, [torch.zeros(2, 3, 8, 8, dtype=torch.uint8)], device="cpu")
    assert model.training
    assert int(model[1].num_batches_tracked) == 0  # ran in eval mode: statistics untouched


def test_evaluate_bin_matches_embeddings_computed_by_hand(tmp_path):
    rgb = _random_images(24, seed=1)
    issame = np.array([i % 3 != 0 for i in range(12)])
    bin_path = write_bin(tmp_path / "tiny.bin", [_png(x) for x in rgb], issame)
    result = evaluate_bin(LeftHalfMeans(), bin_path, batch_size=5, flip=True, device="cpu")
    x = (np.stack(rgb).astype(np.float64) / 255 - 0.5) / 0.5  # [N, H, W, 3]
    left = x[:, :, :56].mean(axis=(1, 2))
    mirrored_left = x[:, :, ::-1][:, :, :56].mean(axis=(1, 2))
    expected = verification_metrics(left + mirrored_left, issame)
    assert result.num_pairs == 12
    np.testing.assert_allclose(result.fold_accuracies, expected.fold_accuracies)
    np.testing.assert_allclose(result.tpr, expected.tpr)
    assert result.auc == pytest.approx(expected.auc)


def test_evaluate_bin_resizes_and_reads_jpeg(tmp_path):
    rgb = _random_images(20, seed=2, size=96)
    bin_path = write_bin(tmp_path / "small.bin", [encode_jpeg(x) for x in rgb], np.arange(10) % 2 == 0)
    result = evaluate_bin(ChannelMeans(), bin_path, batch_size=8, device="cpu", num_workers=1)
    assert result.num_pairs == 10 and 0.0 <= result.accuracy_mean <= 1.0


def test_undecodable_image_names_file_and_index(tmp_path):
    images = [_png(x) for x in _random_images(20, seed=3)]
    images[7] = b"not an image at all"
    bin_path = write_bin(tmp_path / "bad.bin", images, np.ones(10, bool))
    with pytest.raises(TopofrError) as info:
        evaluate_bin(ChannelMeans(), bin_path, batch_size=4, device="cpu", num_workers=1)
    message = str(info.value)
    assert "bad.bin" in message and "image 7" in message and "\n" not in message


def test_too_few_pairs_is_a_user_error(tmp_path):
    bin_path = write_bin(tmp_path / "few.bin", [_png(x) for x in _random_images(4)], [True, False])
    with pytest.raises(TopofrError, match="few.bin"):
        evaluate_bin(ChannelMeans(), bin_path, device="cpu")


def test_default_bins_come_from_the_training_set_meta(tmp_path):
    data = tmp_path / "synth"
    data.mkdir()
    (data / "meta.json").write_text('{"format": "topofr-packed", "verification_bins": ["synthetic_val.bin"]}')
    (data / "synthetic_val.bin").write_bytes(b"")
    recipe = Recipe()
    recipe.data.path = str(data)
    assert default_verification_bins(recipe, "m.pt") == [data / "synthetic_val.bin"]
    with pytest.raises(TopofrError, match="--bin"):
        default_verification_bins(None, "m.pt")
    (data / "meta.json").write_text('{"format": "topofr-packed"}')
    with pytest.raises(TopofrError, match="verification_bins"):
        default_verification_bins(recipe, "m.pt")
