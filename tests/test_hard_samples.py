"""`topofr hard-samples`: streamed margin softmax, dataset-wide GUM, ranking, figures, clean copies.

A tiny model is trained here: a MobileFaceNet with batch-norm statistics calibrated on the data and
a classifier fitted for a few dozen steps on a tiny, easily separable set in which a few labels
were flipped. The flipped images are the ground truth the ranking must find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from topofr_cli import __version__
from topofr_cli.cli.app import app
from topofr_cli.config import Recipe
from topofr_cli.data import open_dataset
from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.packed import PackedWriter
from topofr_cli.evaluation.model_io import load_model
from topofr_cli.hardness import gum_posterior, sde_statistic
from topofr_cli.hardness.class_softmax import margin_softmax_stats, normalized_classifier
from topofr_cli.hardness.clean import flagged_mask, write_clean_dataset
from topofr_cli.hardness.ranking import score_dataset
from topofr_cli.hardness.table_io import COLUMNS
from topofr_cli.models import create_backbone
from topofr_cli.models.heads import CombinedMarginHead

runner = CliRunner()

CLASSES, PER_CLASS, EMBEDDING = 5, 4, 64
FLIPPED = (2, 9, 17)  # dataset indices whose label is replaced by the next class
SCALE, MARGIN = 32.0, 0.2  # the tiny model's recipe head (read back from the checkpoint)


def _class_images(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Each class: its own colour and stripe orientation/period; images differ by noise and brightness."""
    rows, cols = np.mgrid[0:112, 0:112]
    palette = rng.integers(30, 225, size=(CLASSES, 3))
    images, labels = [], []
    for cls in range(CLASSES):
        stripes = 60 * np.sin(2 * np.pi * (cols * np.cos(cls) + rows * np.sin(cls)) / (8 + 4 * cls))
        for _ in range(PER_CLASS):
            pixels = palette[cls] + stripes[..., None] + rng.normal(0, 2, (112, 112, 3)) + rng.normal(0, 8)
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(cls)
    return images, np.asarray(labels)


def _write_packed(
    path: Path, images: list[np.ndarray], labels: np.ndarray, num_classes: int | None = None
) -> Path:
    with PackedWriter(path, source="test") as writer:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            writer.add(encode_jpeg(image), int(label), f"id{label}/img{i:03d}.jpg")
        return writer.finish({"num_classes": num_classes} if num_classes else None)


def _dense_stats(z: torch.Tensor, weight: torch.Tensor, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p_gt and entropy of a full (unstreamed) softmax over all embeddings at once."""
    labels = torch.from_numpy(labels)
    head = CombinedMarginHead(scale=SCALE, m2=MARGIN)
    with torch.no_grad():
        p = torch.softmax(head(z @ F.normalize(weight, dim=1).T, labels), dim=1)
    entropy = -(p * torch.log(p + 1e-5)).sum(dim=1)
    return p.gather(1, labels[:, None]).squeeze(1).numpy(), entropy.numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A packed set with flipped labels and a checkpoint (contract format) trained on it."""
    root = tmp_path_factory.mktemp("hard")
    torch.manual_seed(0)
    images, true_labels = _class_images(np.random.default_rng(0))
    noisy = true_labels.copy()
    noisy[list(FLIPPED)] = (noisy[list(FLIPPED)] + 1) % CLASSES
    data = _write_packed(root / "noisy", images, noisy)

    backbone = create_backbone("mbf", EMBEDDING)
    for module in backbone.modules():  # calibrate BN statistics on the data: a centred feature space
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            module.reset_running_stats()
    decoded = open_dataset(data)  # train on what the loader will decode (JPEG changes the pixels)
    x = torch.from_numpy(np.stack([decoded[i][0] for i in range(len(decoded))])).permute(0, 3, 1, 2)
    x = x.float() / 127.5 - 1
    with torch.no_grad():
        backbone.train()(x)
        z = F.normalize(backbone.eval()(x), dim=1)
    weight = torch.nn.Parameter(torch.randn(CLASSES, EMBEDDING) * 0.01)
    head = CombinedMarginHead(scale=SCALE, m2=MARGIN)
    optimizer = torch.optim.SGD([weight], lr=2.0, momentum=0.9)
    labels = torch.from_numpy(noisy)
    for _ in range(60):
        loss = F.cross_entropy(head(z @ F.normalize(weight, dim=1).T, labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    recipe = Recipe().to_dict()
    recipe["model"].update(network="mbf", embedding_size=EMBEDDING)
    recipe["head"].update(scale=SCALE, m2=MARGIN)
    checkpoint = {
        "format": "topofr-checkpoint",
        "topofr_version": __version__,
        "model": {"network": "mbf", "embedding_size": EMBEDDING, "num_classes": CLASSES},
        "recipe": recipe,
        "step": 60,
        "epoch": 0,
        "backbone": backbone.state_dict(),
        "classifier": weight.detach().clone(),
        "latent_scale": None,
    }
    model_path = root / "step_00000060.pt"
    torch.save(checkpoint, model_path)
    bare_path = root / "backbone.pt"
    torch.save(backbone.state_dict(), bare_path)
    return {
        "root": root,
        "data": data,
        "model": model_path,
        "bare": bare_path,
        "images": images,
        "embeddings": z,
    }


@pytest.fixture(scope="module")
def streamed(trained):
    """Dataset-scope table, streamed in batches of 5 with classes in blocks of 4."""
    model, dataset = load_model(trained["model"]), open_dataset(trained["data"])
    table = score_dataset(model, dataset, batch_size=5, class_block=4, progress=False, mode="paper")
    return model, dataset, table


def test_streamed_margin_softmax_matches_the_dense_softmax():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(9, 16, generator=generator)
    weight = torch.randn(11, 16, generator=generator)
    labels = torch.tensor([0, 3, 4, 10, 7, 7, 2, 9, 5])
    head = CombinedMarginHead()
    cosine = F.normalize(z) @ F.normalize(weight).T
    p = torch.softmax(head(cosine, labels), dim=1)
    top = cosine.topk(2, dim=1)  # the prediction ignores the margin
    for block in (1, 3, 4, 11, 64):
        stats = margin_softmax_stats(z, labels, normalized_classifier(weight, "cpu"), head, class_block=block)
        torch.testing.assert_close(
            stats.p_true, p.gather(1, labels[:, None]).squeeze(1), rtol=1e-5, atol=1e-7
        )
        torch.testing.assert_close(stats.entropy, -(p * torch.log(p + 1e-5)).sum(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            stats.p_predicted, p.gather(1, top.indices[:, :1]).squeeze(1), rtol=1e-5, atol=1e-7
        )
        torch.testing.assert_close(
            stats.p_runner_up, p.gather(1, top.indices[:, 1:]).squeeze(1), rtol=1e-5, atol=1e-7
        )
        torch.testing.assert_close(stats.cosine_gap, top.values[:, 0] - top.values[:, 1])
        assert torch.equal(stats.predicted, top.indices[:, 0])
        assert torch.equal(stats.runner_up, top.indices[:, 1])


def test_dataset_gum_equals_one_fit_over_the_concatenated_batch(trained, streamed):
    model, dataset, table = streamed
    p_true, entropy = _dense_stats(trained["embeddings"], model.classifier_weight, dataset.labels)
    np.testing.assert_allclose(table.p_true, p_true, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table.entropy, entropy, rtol=1e-4, atol=1e-5)
    one_fit = gum_posterior(sde_statistic(torch.from_numpy(entropy.astype(np.float64))))
    # float32 entropies from two code paths: the fit amplifies their last-bit differences a little
    np.testing.assert_allclose(table.gamma, one_fit.gamma.numpy(), rtol=2e-3, atol=1e-6)
    assert table.gum is not None
    assert table.gum.pi == pytest.approx(float(one_fit.pi), rel=1e-4)
    w1 = 2.0 - table.gamma  # temperature 1
    np.testing.assert_allclose(table.sds, w1 * (1.0 - table.p_true.astype(np.float64)), rtol=1e-6)


def test_batch_scope_fits_each_batch_alone(streamed):
    model, dataset, dataset_table = streamed
    table = score_dataset(model, dataset, batch_size=10, gum_scope="batch", progress=False, mode="paper")
    assert table.gum is None
    for start in range(0, len(dataset), 10):
        chunk = dataset_table.entropy[start : start + 10].astype(np.float64)
        fit = gum_posterior(sde_statistic(torch.from_numpy(chunk)))
        np.testing.assert_allclose(table.gamma[start : start + 10], fit.gamma.numpy(), rtol=1e-4, atol=1e-6)


def test_flipped_labels_rank_above_clean_ones(streamed):
    _, _, table = streamed
    assert set(table.ranking()[: len(FLIPPED)].tolist()) == set(FLIPPED)
    clean = np.setdiff1d(np.arange(len(table)), FLIPPED)
    assert table.sds[list(FLIPPED)].min() > table.sds[clean].max()


def test_flagged_mask_by_count_and_threshold(streamed):
    _, _, table = streamed
    assert np.flatnonzero(flagged_mask(table, drop_top=3, drop_above=None)).tolist() == sorted(FLIPPED)
    threshold = float(np.sort(table.sds)[-5])
    assert flagged_mask(table, drop_top=None, drop_above=threshold).sum() == 4


def test_write_clean_by_threshold_keeps_bytes_and_classes(streamed, tmp_path):
    _, dataset, table = streamed
    threshold = float(np.sort(table.sds)[-3])  # strictly above: the top two go
    report = write_clean_dataset(dataset, table, tmp_path / "clean", drop_above=threshold, progress=False)
    clean = open_dataset(report.path)
    assert (len(clean), report.dropped) == (len(dataset) - 2, 2)
    assert clean.num_classes == dataset.num_classes
    kept = np.setdiff1d(np.arange(len(dataset)), table.ranking()[:2])
    for j, i in enumerate(kept):
        assert clean.encoded(j) == dataset.encoded(int(i))
        assert clean.source_key(j) == dataset.source_key(int(i))
        assert clean.labels[j] == dataset.labels[i]


def test_cli_writes_ranked_tables_figures_and_a_clean_set(trained, tmp_path, monkeypatch):
    out, clean_dir = tmp_path / "report", tmp_path / "clean"
    args = [
        "hard-samples",
        str(trained["model"]),
        "--data",
        str(trained["data"]),
        "--out",
        str(out),
        "--top",
        "4",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--write-clean",
        str(clean_dir),
        "--drop-top",
        "3",
    ]
    monkeypatch.setattr("sys.argv", ["/venv/bin/topofr", *args])  # what a shell would hand the program
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    dataset = open_dataset(trained["data"])
    frame = pd.read_parquet(out / "sds.parquet")
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == len(dataset)
    assert frame["rank"].tolist() == list(range(1, len(dataset) + 1))
    assert np.all(np.diff(frame["sds"].to_numpy()) <= 0)
    assert sorted(frame["index"]) == list(range(len(dataset)))
    assert set(frame["index"][:3]) == set(FLIPPED)
    for _, row in frame.head(5).iterrows():
        assert row["key"] == dataset.source_key(int(row["index"]))
        assert row["label"] == dataset.labels[int(row["index"])]
    assert ((frame["cosine_gap"] >= 0) & (frame["cosine_gap"] <= 2)).all()  # a gap between two cosines
    right = frame["predicted"] == frame["label"]
    np.testing.assert_allclose(frame["p_predicted"][right], frame["p_gt"][right], rtol=1e-6)
    csv = pd.read_csv(out / "sds.csv")
    assert tuple(csv.columns) == COLUMNS
    assert csv["index"].tolist() == frame["index"].tolist()
    np.testing.assert_allclose(csv["sds"], frame["sds"], rtol=1e-6)

    for name in ("gallery.png", "distributions.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == len(dataset) and summary["gum"]["pi"] > 0
    assert (summary["mode"], summary["temperature"], summary["step"]) == ("noise", 1.0, 60)
    assert (summary["model"], summary["network"], summary["flip"]) == (str(trained["model"]), "mbf", False)
    assert summary["topofr_version"] == __version__ and summary["command"] == "topofr " + " ".join(args)
    assert summary["degenerate"] is False and summary["mean_cosine"] < 0.9
    assert "Top 4" in result.output

    clean = open_dataset(clean_dir)
    assert len(clean) == len(dataset) - 3
    kept_keys = {clean.source_key(i) for i in range(len(clean))}
    assert not kept_keys & {dataset.source_key(i) for i in FLIPPED}


def test_cli_rejects_a_bare_backbone(trained, tmp_path):
    result = runner.invoke(
        app,
        [
            "hard-samples",
            str(trained["bare"]),
            "--data",
            str(trained["data"]),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert "bare backbone" in result.output and "backbone.pt" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_rejects_a_dataset_with_another_class_count(trained, tmp_path):
    images = trained["images"][:4]
    other = _write_packed(tmp_path / "other", images, np.arange(4) % 3, num_classes=CLASSES + 2)
    result = runner.invoke(
        app, ["hard-samples", str(trained["model"]), "--data", str(other), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert f"{CLASSES + 2} classes" in result.output and f"has {CLASSES}" in result.output


def test_cli_rejects_an_empty_dataset(trained, tmp_path):
    (tmp_path / "empty" / "id0").mkdir(parents=True)
    result = runner.invoke(
        app,
        [
            "hard-samples",
            str(trained["model"]),
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert "empty" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--drop-top", "3"], "only meaningful with --write-clean"),
        (["--write-clean", "CLEAN"], "exactly one of"),
        (["--write-clean", "CLEAN", "--drop-top", "1", "--drop-above", "0.5"], "exactly one of"),
    ],
)
def test_cli_rejects_inconsistent_clean_options(trained, tmp_path, extra, message):
    extra = [str(tmp_path / "clean") if e == "CLEAN" else e for e in extra]
    result = runner.invoke(
        app,
        [
            "hard-samples",
            str(trained["model"]),
            "--data",
            str(trained["data"]),
            "--out",
            str(tmp_path / "o"),
            *extra,
        ],
    )
    assert result.exit_code == 2
    assert message in result.output


def test_noise_mode_takes_probabilities_from_the_scaled_cosines(trained):
    """mode noise (the default): p_gt = softmax(s · cos θ)[label], computed here from the embeddings and weights."""
    model, dataset = load_model(trained["model"]), open_dataset(trained["data"])
    table = score_dataset(model, dataset, batch_size=7, progress=False)
    assert table.mode == "noise"
    weight = F.normalize(torch.load(trained["model"], weights_only=True)["classifier"], dim=1)
    p = torch.softmax(SCALE * trained["embeddings"] @ weight.T, dim=1)
    labels = torch.from_numpy(dataset.labels)
    expected = p.gather(1, labels[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(table.p_true, expected, rtol=1e-4, atol=1e-6)
    with_margin = score_dataset(model, dataset, batch_size=7, progress=False, mode="paper")
    assert (table.p_true >= with_margin.p_true - 1e-6).all()  # the margin only ever lowers p_gt
    assert (table.p_true > with_margin.p_true + 1e-3).any()


def test_cli_detect_reads_raw_photos(trained, tmp_path):
    import pandas as pd
    from test_prepare_detect_cli import DOTS, _landmarks
    from writers.dot_detector import dot_photo

    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "a" / "x.png").write_bytes(dot_photo(None))
    command = [
        "hard-samples",
        str(trained["model"]),
        "--data",
        str(tmp_path / "raw"),
        "--detect",
        "--detector",
        DOTS,
        "--out",
        str(tmp_path / "hs"),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--top",
        "3",
    ]
    result = runner.invoke(app, command)
    assert result.exit_code == 2 and "no face found in any of its 1 photos" in result.output
    assert not (tmp_path / "hs").exists()
    for identity in range(CLASSES):  # as many identities as the model's classifier has
        (tmp_path / "raw" / f"p{identity}").mkdir(exist_ok=True)
        for k in range(2):
            photo = dot_photo(_landmarks(10 * identity + k), seed=k)
            (tmp_path / "raw" / f"p{identity}" / f"{k}.png").write_bytes(photo)
    (tmp_path / "raw" / "a" / "x.png").unlink()
    (tmp_path / "raw" / "a").rmdir()
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "hs" / "sds.csv")
    assert sorted(table["key"]) == sorted(f"p{i}/{k}.png" for i in range(CLASSES) for k in range(2))


def _invoke(trained, *extra):
    return runner.invoke(
        app,
        [
            "hard-samples",
            str(trained["model"]),
            "--data",
            str(trained["data"]),
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--workers",
            "0",
            *map(str, extra),
        ],
    )


def test_cli_keeps_earlier_results_unless_overwrite(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _invoke(trained, "--mode", "paper")
    assert first.exit_code == 0, first.output
    out = tmp_path / "topofr-hard-samples" / "step_00000060"  # named after the model (it is not in a run)
    assert json.loads((out / "summary.json").read_text())["mode"] == "paper"
    before = (out / "sds.csv").read_bytes()
    again = _invoke(trained)
    assert again.exit_code == 2
    assert again.output.strip() == (
        f"error: {out.relative_to(tmp_path) / 'sds.parquet'}: already exists (results "
        "of an earlier run; pass --overwrite to replace them or choose another --out)"
    )
    assert (out / "sds.csv").read_bytes() == before
    replaced = _invoke(trained, "--no-margin", "--overwrite")  # the old name of --mode noise
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "summary.json").read_text())["mode"] == "noise"
    assert "p_gt from the noise mode" in replaced.output


def test_cli_flags_a_collapsed_model(trained, tmp_path):
    payload = torch.load(trained["model"], weights_only=True)
    payload["backbone"]["features.layers.3.weight"].zero_()  # the last BatchNorm outputs its bias alone
    payload["backbone"]["features.layers.3.bias"].fill_(1.0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(payload, run / "checkpoints" / "step_00000060.pt")
    result = runner.invoke(
        app,
        [
            "hard-samples",
            str(run / "checkpoints" / "step_00000060.pt"),
            "--data",
            str(trained["data"]),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "degenerate embeddings" in warnings[0]
    summary = json.loads((run / "hard-samples" / "step_00000060" / "summary.json").read_text())
    assert summary["degenerate"] is True and summary["mean_cosine"] == pytest.approx(1.0)
