"""Synthetic faces: determinism, held-out split, pair layout, packed output, pixel baseline, CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.data import open_dataset
from topofr_cli.data.bins import read_bin
from topofr_cli.data.folds import kfold_splits
from topofr_cli.data.images import decode_image
from topofr_cli.data.synthetic import (
    BIN_NAME,
    ROLE_HELDOUT,
    ROLE_TRAIN,
    draw_pairs,
    generate_synthetic,
    identity_parameters,
    render_identity,
)
from topofr_cli.data.synthetic_nuisance import draw_nuisance
from topofr_cli.data.synthetic_render import IMAGE_SIZE, draw_identity, render_pixels
from topofr_cli.errors import TopofrError
from topofr_cli.evaluation.baseline import pixel_baseline, pixel_baseline_accuracy
from topofr_cli.evaluation.protocol import verification_metrics

TINY = {"identities": 4, "images_per_identity": 3, "heldout_identities": 5, "pairs": 20}


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "tiny"
    report = generate_synthetic(out, seed=7, progress=False, **TINY)
    return out, report


def test_packed_output_counts_labels_keys(tiny_set):
    out, report = tiny_set
    dataset = open_dataset(out)
    assert len(dataset) == report.num_images == 12
    assert dataset.num_classes == report.num_classes == 4
    np.testing.assert_array_equal(dataset.labels, np.repeat(np.arange(4), 3))
    assert dataset.source_key(5) == "id00001/img0002"
    rgb, label = dataset[5]
    assert rgb.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and rgb.dtype == np.uint8 and label == 1
    assert dataset.meta["verification_bins"] == [BIN_NAME]
    assert dataset.meta["synthetic"]["seed"] == 7
    assert dataset.meta["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    # the stored bytes are exactly what the renderer makes for (seed 7, training identity 1)
    assert dataset.encoded(5) == render_identity((7, ROLE_TRAIN, 1, 3, 1.0, 90))[2]
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp dir left


def test_bin_pairs_are_balanced_per_fold_and_come_from_heldout_identities(tiny_set):
    out, _ = tiny_set
    pairs = read_bin(out / BIN_NAME)
    assert len(pairs) == 20 and len(pairs.images) == 40
    assert pairs.issame.sum() == 10
    for fold in kfold_splits(20):
        assert pairs.issame[fold].sum() == 1  # folds of two pairs: one genuine, one impostor
    heldout = {
        photo: (j, k)
        for j in range(TINY["heldout_identities"])
        for k, photo in enumerate(render_identity((7, ROLE_HELDOUT, j, 3, 1.0, 90)))
    }
    dataset = open_dataset(out)
    training = {dataset.encoded(i) for i in range(len(dataset))}
    for i, same in enumerate(pairs.issame):
        a, b = heldout[pairs.images[2 * i]], heldout[pairs.images[2 * i + 1]]
        assert (a[0] == b[0]) == same
        if same:
            assert a[1] != b[1]  # a genuine pair is two different photos
        assert pairs.images[2 * i] not in training


def test_heldout_identities_differ_from_training_identities():
    train = [identity_parameters(3, ROLE_TRAIN, i).vector() for i in range(30)]
    for j in range(30):
        held = identity_parameters(3, ROLE_HELDOUT, j).vector()
        assert all(t.shape != held.shape or not np.allclose(t, held) for t in train)
    # and the parameters are a pure function of (seed, role, index)
    np.testing.assert_array_equal(
        identity_parameters(3, ROLE_HELDOUT, 4).vector(), identity_parameters(3, ROLE_HELDOUT, 4).vector()
    )


def test_same_seed_same_bytes_any_worker_count_and_other_seed_differs(tmp_path, tiny_set):
    out, _ = tiny_set
    again = tmp_path / "again"
    generate_synthetic(again, seed=7, progress=False, workers=2, **TINY)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    generate_synthetic(other, seed=8, progress=False, **TINY)
    assert _files(other)["images-00000.shard"] != _files(out)["images-00000.shard"]
    assert _files(other)[BIN_NAME] != _files(out)[BIN_NAME]


def test_draw_pairs_genuine_iff_same_identity():
    first, second, issame = draw_pairs(np.random.default_rng(0), identities=7, per_identity=4, pairs=200)
    assert issame.sum() == 100
    np.testing.assert_array_equal(first[:, 0] == second[:, 0], issame)
    assert np.all(first[issame, 1] != second[issame, 1])
    assert first.min() >= 0 and first[:, 0].max() < 7 and second[:, 1].max() < 4
    for fold in kfold_splits(200):
        assert issame[fold].sum() == 10


def test_face_centre_carries_identity_and_nuisance_moves_pixels():
    rng = np.random.default_rng(1)
    people = [draw_identity(rng) for _ in range(2)]
    centre = np.s_[:, 40:80, 36:76]  # eyes, nose, mouth: inside every face

    def photos(person, difficulty):
        return render_pixels(person, draw_nuisance(rng, 2, difficulty=difficulty))[centre].astype(np.float32)

    calm_a, calm_b, wild_a = photos(people[0], 0.0), photos(people[1], 0.0), photos(people[0], 1.0)
    assert calm_a.shape == (2, 40, 40, 3)
    same_person = np.abs(calm_a[0] - calm_a[1]).mean()
    other_person = np.abs(calm_a[0] - calm_b[0]).mean()
    assert same_person < other_person  # without pose/light nuisance the face itself decides
    assert same_person < np.abs(wild_a[0] - wild_a[1]).mean()  # nuisance moves pixels


def test_pixel_baseline_matches_direct_computation_and_detects_identical_pairs(tmp_path):
    rng = np.random.default_rng(0)
    photos = [render_identity((0, ROLE_HELDOUT, j, 2, 1.0, 90)) for j in range(12)]
    images, issame = [], []
    for i in range(20):  # independent writer: the .bin format of docs/method.md §3.2 is a pickle
        a, b = rng.integers(0, 12, 2)
        same = i % 2 == 0
        images += [photos[a][0], photos[a][1] if same else photos[(a + 1 + b % 11) % 12][1]]
        issame.append(same)
    path = tmp_path / "pairs.bin"
    path.write_bytes(pickle.dumps((images, issame), protocol=4))
    x = np.stack([decode_image(im) for im in images]).astype(np.float64) / 127.5 - 1.0
    direct = verification_metrics((x + x[:, :, ::-1]).reshape(40, -1), np.array(issame))
    chunked = pixel_baseline(path, chunk_pairs=3)
    assert chunked.accuracy_mean == pytest.approx(direct.accuracy_mean)
    assert chunked.auc == pytest.approx(direct.auc)

    # genuine pairs of one photo twice: distance 0, so the protocol must separate them
    identical = [
        im
        for i, same in enumerate(issame)
        for im in (images[2 * i], images[2 * i] if same else images[2 * i + 1])
    ]
    path.write_bytes(pickle.dumps((identical, issame), protocol=4))
    assert pixel_baseline_accuracy(path) > 0.9


def test_raw_pixels_stay_below_75_percent(tmp_path):
    report = generate_synthetic(
        tmp_path / "hard",
        identities=2,
        images_per_identity=6,
        heldout_identities=60,
        pairs=300,
        seed=11,
        progress=False,
        baseline=pixel_baseline,
    )
    assert 0.4 < report.pixel_baseline_accuracy < 0.75
    meta = json.loads((report.out_dir / "meta.json").read_text())
    assert meta["synthetic"]["pixel_baseline_accuracy"] == pytest.approx(report.pixel_baseline_accuracy)


def test_without_a_baseline_function_meta_records_no_baseline(tiny_set):
    out, report = tiny_set
    meta = json.loads((out / "meta.json").read_text())
    assert report.pixel_baseline is None and report.pixel_baseline_accuracy is None
    assert "pixel_baseline_accuracy" not in meta["synthetic"] and meta["synthetic"]["seed"] == 7


@pytest.mark.parametrize(
    "bad",
    [{"images_per_identity": 1}, {"heldout_identities": 1}, {"pairs": 21}, {"pairs": 10}, {"identities": 0}],
)
def test_bad_arguments_are_user_errors(tmp_path, bad):
    with pytest.raises(TopofrError, match=str(tmp_path / "x")):
        generate_synthetic(tmp_path / "x", seed=0, progress=False, **{**TINY, **bad})
    assert not (tmp_path / "x").exists()


def test_cli_generates_and_refuses_existing_output(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "prepare",
        "synthetic",
        str(out),
        "--identities",
        "3",
        "--images-per-identity",
        "2",
        "--heldout-identities",
        "3",
        "--pairs",
        "20",
        "--seed",
        "5",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pixel" in result.output.lower()
    assert len(open_dataset(out)) == 6
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, [*args[:3], "--pairs", "7", "--overwrite"])
    assert bad.exit_code == 2 and "pairs must be even" in bad.output
