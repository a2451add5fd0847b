"""Loaders: epoch-seeded sharded order, bit-exact mid-epoch resume without decoding skipped images, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from writers.rec_writer import smooth_jpeg

from topofr_cli.data import open_dataset
from topofr_cli.data.images import decode_image, resize_rgb
from topofr_cli.data.loader import EpochBatchSampler, make_train_loader, normalize
from topofr_cli.data.ordered import MODEL_INPUT_SIZE, dataset_batches
from topofr_cli.data.packed import PackedWriter
from topofr_cli.errors import TopofrError


class CountingDataset:
    """Images whose pixels encode their index; counts every access."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.labels = np.arange(count, dtype=np.int64) % 7
        self.accessed: list[int] = []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        self.accessed.append(index)
        return np.full((4, 5, 3), index, dtype=np.uint8), int(self.labels[index])


def _batches(sampler):
    return [list(batch) for batch in sampler]


def test_same_seed_same_order_and_epochs_differ():
    a = EpochBatchSampler(50, 8, seed=3)
    b = EpochBatchSampler(50, 8, seed=3)
    assert _batches(a) == _batches(b) and len(a) == 6 and len(_batches(a)) == 6
    first = _batches(a)
    a.set_epoch(1)
    assert _batches(a) != first
    assert _batches(EpochBatchSampler(50, 8, seed=4)) != first
    assert all(len(set(batch)) == 8 for batch in first)


def test_ranks_take_disjoint_slices_covering_the_epoch():
    per_rank = [EpochBatchSampler(40, 5, seed=1, rank=r, world_size=4) for r in range(4)]
    seen = [np.concatenate(_batches(s)) for s in per_rank]
    assert all(len(s) == 10 for s in seen)
    assert sorted(np.concatenate(seen).tolist()) == list(range(40))
    uneven = [EpochBatchSampler(10, 2, seed=1, rank=r, world_size=3, drop_last=False) for r in range(3)]
    assert {len(np.concatenate(_batches(s))) for s in uneven} == {4}  # padded by wrapping, equal work


def test_start_batch_resumes_exactly_and_skips_decoding():
    dataset = CountingDataset(64)
    loader = make_train_loader(dataset, 8, num_workers=0, seed=11)
    assert isinstance(loader.sampler, EpochBatchSampler)
    loader.sampler.set_epoch(2)
    full = [(images.clone(), labels.clone()) for images, labels in loader]
    assert len(full) == 8
    dataset.accessed.clear()
    loader.sampler.set_epoch(2)
    loader.sampler.set_start_batch(5)
    resumed = list(loader)
    assert len(resumed) == 3 and len(dataset.accessed) == 3 * 8  # skipped batches never touched
    for (images, labels), (want_images, want_labels) in zip(resumed, full[5:], strict=True):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    assert len(list(loader)) == 8  # the start batch is used once


def test_batches_are_uint8_nchw_with_int64_labels():
    dataset = CountingDataset(20)
    images, labels = next(iter(make_train_loader(dataset, 4, num_workers=0, seed=0)))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 4, 5) and images.is_contiguous()
    assert labels.dtype == torch.int64
    indices = images[:, 0, 0, 0].long()
    assert torch.equal(labels, torch.from_numpy(dataset.labels)[indices])


@pytest.fixture(scope="module")
def tiny_packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "packed"
    with PackedWriter(out, source="test") as writer:
        for i in range(24):
            writer.add(smooth_jpeg(i, size=16), i % 5, str(i))
        writer.finish()
    return open_dataset(out)


def test_two_workers_match_the_main_process(tiny_packed):
    in_process = list(make_train_loader(tiny_packed, 6, num_workers=0, seed=5))
    loader = make_train_loader(tiny_packed, 6, num_workers=2, seed=5)
    with_workers = list(loader)
    assert len(with_workers) == 4
    for (a, la), (b, lb) in zip(in_process, with_workers, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))[0], in_process[0][0])  # persistent workers see the new epoch


def test_ordered_loader_in_order_at_the_model_input_size(tiny_packed):
    batches = list(dataset_batches(tiny_packed, 10, num_workers=0))
    assert [len(b[2]) for b in batches] == [10, 10, 4]
    indices = torch.cat([b[2] for b in batches])
    assert indices.tolist() == list(range(24))
    images = torch.cat([b[0] for b in batches])
    assert images.shape[1:] == (3, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE) and images.dtype == torch.uint8
    expected = resize_rgb(decode_image(tiny_packed.encoded(17)), MODEL_INPUT_SIZE, MODEL_INPUT_SIZE)
    assert torch.equal(images[17], torch.from_numpy(expected.copy()).permute(2, 0, 1))
    labels = torch.cat([b[1] for b in batches])
    assert labels.dtype == torch.int64 and labels.tolist() == tiny_packed.labels.tolist()


def test_normalize():
    images = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(images)
    assert out.dtype == torch.float32 and images.dtype == torch.uint8
    torch.testing.assert_close(out.view(-1), torch.tensor([-1.0, 1.0, (128 / 255 - 0.5) / 0.5]))
    with pytest.raises(TypeError):
        normalize(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_record_is_one_line_error_naming_it(tmp_path, workers):
    out = tmp_path / "packed"
    with PackedWriter(out, source="test") as writer:
        for i in range(8):
            good = smooth_jpeg(i, size=16)
            writer.add(good[:-60] if i == 5 else good, 0, f"img{i}")  # image 5 is a truncated JPEG
        writer.finish()
    with pytest.raises(TopofrError) as caught:
        list(dataset_batches(open_dataset(out), 4, num_workers=workers))
    message = str(caught.value)
    assert "image 5 (img5): not a decodable image" in message and "\n" not in message
