"""`topofr eval` through Typer's runner: a tiny mbf checkpoint (contract format) on tiny .bin files."""

from __future__ import annotations

import csv
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.data.bins import write_bin
from topofr_cli.evaluation.protocol import verification_metrics
from topofr_cli.models import create_backbone

runner = CliRunner()
NUM_PAIRS = 10
EMBEDDING = 32


def _png(rgb):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def _embed_by_hand(model, rgb_list):
    """(embedding of each image, embedding of its mirror image)."""
    x = torch.from_numpy(np.stack(rgb_list)).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        return model(x).numpy(), model(torch.flip(x, dims=[3])).numpy()


@pytest.fixture(scope="module")
def checkpoint(calibrated_backbone, tmp_path_factory):
    """An mbf checkpoint in the docs/interfaces.md format, recipe pointing at a packed-style set."""
    root = tmp_path_factory.mktemp("eval_cli")
    model = calibrated_backbone("mbf", EMBEDDING)
    data_dir = root / "synthetic"
    data_dir.mkdir()
    rgb = _images(2 * NUM_PAIRS, seed=5)
    issame = np.arange(NUM_PAIRS) % 2 == 0
    write_bin(data_dir / "synthetic_val.bin", [_png(x) for x in rgb], issame)
    (data_dir / "meta.json").write_text(
        '{"format": "topofr-packed", "verification_bins": ["synthetic_val.bin"]}'
    )
    path = root / "step_00000005.pt"
    torch.save(
        {
            "format": "topofr-checkpoint",
            "topofr_version": "0.1.0",
            "model": {"network": "mbf", "embedding_size": EMBEDDING, "num_classes": 3},
            "recipe": {"data": {"path": str(data_dir)}},
            "step": 5,
            "epoch": 0,
            "backbone": model.state_dict(),
            "classifier": torch.randn(3, EMBEDDING),
            "latent_scale": None,
            "training": {},
        },
        path,
    )
    plain, mirrored = _embed_by_hand(model, rgb)
    return {
        "path": path,
        "model": model,
        "rgb": rgb,
        "issame": issame,
        "bin": data_dir / "synthetic_val.bin",
        "root": root,
        "plain": plain,
        "flip_sum": plain + mirrored,
    }


def _read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_eval_bin_writes_csv_and_roc(checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint["path"]),
            "--bin",
            str(checkpoint["bin"]),
            "--no-flip",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "synthetic_val" in result.output and "step 5" in result.output
    rows = _read_csv(tmp_path / "out" / "verification.csv")
    expected = verification_metrics(checkpoint["plain"], checkpoint["issame"])
    assert len(rows) == 1 and rows[0]["set"] == "synthetic_val"
    assert float(rows[0]["accuracy"]) == pytest.approx(expected.accuracy_mean, abs=1e-5)
    assert float(rows[0]["auc"]) == pytest.approx(expected.auc, abs=1e-5)
    assert float(rows[0]["best_threshold"]) == pytest.approx(expected.best_threshold, abs=1e-5)
    png = (tmp_path / "out" / "verification_roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_defaults_to_the_training_sets_heldout_bin(checkpoint, tmp_path):
    result = runner.invoke(
        app,
        ["eval", str(checkpoint["path"]), "--out", str(tmp_path), "--num-workers", "0", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    rows = _read_csv(tmp_path / "verification.csv")
    expected = verification_metrics(checkpoint["flip_sum"], checkpoint["issame"])
    assert float(rows[0]["accuracy"]) == pytest.approx(expected.accuracy_mean, abs=1e-5)


def test_eval_without_bins_or_training_set_is_a_clear_error(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(create_backbone("mbf", 16).state_dict(), path)
    result = runner.invoke(app, ["eval", str(path), "--device", "cpu"])
    assert result.exit_code == 2
    assert "backbone.pth" in result.output and "--bin" in result.output


def test_bin_with_mismatched_counts_is_rejected(checkpoint, tmp_path):
    bad = tmp_path / "bad.bin"
    with open(bad, "wb") as handle:
        pickle.dump(([_png(x) for x in _images(5, seed=1)], [True, False, True]), handle, protocol=4)
    result = runner.invoke(
        app, ["eval", str(checkpoint["path"]), "--bin", str(bad), "--device", "cpu", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "bad.bin" in result.output and "5 images for 3 pairs" in result.output
    assert not (tmp_path / "verification.csv").exists()


def test_wrong_architecture_is_rejected(checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint["path"]),
            "--network",
            "r18",
            "--bin",
            str(checkpoint["bin"]),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 2
    assert checkpoint["path"].name in result.output and "r18" in result.output


def _image_folder(root, per_identity=(2, 3)):
    rgb = []
    for identity, count in enumerate(per_identity):
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for k in range(count):
            image = _images(1, seed=100 + 10 * identity + k)[0]
            Image.fromarray(image).save(folder / f"{k}.png")
            rgb.append(image)
    return rgb


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_embeddings_out(checkpoint, tmp_path, suffix):
    import pyarrow.parquet as pq

    from topofr_cli.data import open_dataset

    _image_folder(tmp_path / "faces")
    dataset = open_dataset(tmp_path / "faces")
    out = tmp_path / f"emb{suffix}"
    result = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint["path"]),
            "--data",
            str(tmp_path / "faces"),
            "--embeddings",
            str(out),
            "--batch-size",
            "2",
            "--num-workers",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    plain, mirrored = _embed_by_hand(checkpoint["model"], [dataset[i][0] for i in range(len(dataset))])
    expected = plain + mirrored
    if suffix == ".npy":
        np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-4)
        return
    table = pq.read_table(out).to_pydict()
    assert table["index"] == list(range(len(dataset)))
    assert table["label"] == [int(x) for x in dataset.labels]
    assert table["source_key"] == [dataset.source_key(i) for i in range(len(dataset))]
    np.testing.assert_allclose(np.array(table["embedding"]), expected, rtol=1e-4, atol=1e-4)


def test_embeddings_needs_data(checkpoint, tmp_path):
    result = runner.invoke(app, ["eval", str(checkpoint["path"]), "--embeddings", str(tmp_path / "e.npy")])
    assert result.exit_code == 2 and "--data" in result.output


def test_embeddings_of_raw_photos_with_detect(checkpoint, tmp_path):
    """eval --data RAW --detect embeds the same aligned faces that prepare folder --detect packs."""
    import pyarrow.parquet as pq
    from test_prepare_detect_cli import DOTS, _dot_folder

    _dot_folder(tmp_path / "raw")
    packed = runner.invoke(
        app,
        [
            "prepare",
            "folder",
            str(tmp_path / "raw"),
            str(tmp_path / "aligned"),
            "--detect",
            "--detector",
            DOTS,
        ],
    )
    assert packed.exit_code == 0, packed.output
    common = ["--batch-size", "4", "--num-workers", "0", "--device", "cpu"]
    result = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint["path"]),
            "--data",
            str(tmp_path / "raw"),
            "--detect",
            "--detector",
            DOTS,
            "--embeddings",
            str(tmp_path / "raw.parquet"),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no face found in 1 of 7 photos" in result.output
    reference = runner.invoke(
        app,
        [
            "eval",
            str(checkpoint["path"]),
            "--data",
            str(tmp_path / "aligned"),
            "--embeddings",
            str(tmp_path / "aligned.parquet"),
            *common,
        ],
    )
    assert reference.exit_code == 0, reference.output
    raw, aligned = (pq.read_table(tmp_path / f"{name}.parquet").to_pydict() for name in ("raw", "aligned"))
    assert raw["source_key"] == aligned["source_key"] and "p1/blank.png" not in raw["source_key"]
    assert raw["label"] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(np.array(raw["embedding"]), np.array(aligned["embedding"]), atol=1e-5)


def test_detect_needs_data(checkpoint, tmp_path):
    result = runner.invoke(app, ["eval", str(checkpoint["path"]), "--detect"])
    assert result.exit_code == 2 and "--detect applies to --data" in result.output


def test_eval_roc_as_pdf_and_a_bad_format(checkpoint, tmp_path):
    args = [
        "eval",
        str(checkpoint["path"]),
        "--bin",
        str(checkpoint["bin"]),
        "--no-flip",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "pdf"), "--figure-format", "pdf"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pdf" / "verification_roc.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (tmp_path / "pdf" / "verification_roc.png").exists()
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--figure-format", "tiff"])
    assert bad.exit_code == 2 and "--figure-format tiff: expected one of png, pdf, svg" in bad.output
    assert not (tmp_path / "bad").exists()


def _run_checkpoint(checkpoint, run, *, collapse=False):
    """The fixture's checkpoint copied to RUN/checkpoints/step_00000005.pt (optionally collapsed)."""
    payload = torch.load(checkpoint["path"], weights_only=False)
    if collapse:  # the last BatchNorm outputs its bias alone: every face gets the same embedding
        payload["backbone"]["features.layers.3.weight"].zero_()
        payload["backbone"]["features.layers.3.bias"].fill_(1.0)
    path = run / "checkpoints" / "step_00000005.pt"
    path.parent.mkdir(parents=True)
    torch.save(payload, path)
    return path


def _eval(path, *extra):
    return runner.invoke(app, ["eval", str(path), "--num-workers", "0", "--device", "cpu", *map(str, extra)])


def test_two_runs_same_named_checkpoints_never_overwrite(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["topofr", "eval", "X"])
    run_a, run_b = tmp_path / "runA", tmp_path / "runB"
    model_a, model_b = _run_checkpoint(checkpoint, run_a), _run_checkpoint(checkpoint, run_b, collapse=True)
    for model in (model_a, model_b):
        result = _eval(model)
        assert result.exit_code == 0, result.output
    rows_a = _read_csv(run_a / "eval" / "step_00000005" / "verification.csv")
    rows_b = _read_csv(run_b / "eval" / "step_00000005" / "verification.csv")
    assert list(rows_a[0])[:3] == ["model", "step", "set"]
    assert (rows_a[0]["model"], rows_a[0]["step"], rows_b[0]["model"]) == (str(model_a), "5", str(model_b))
    assert (rows_a[0]["network"], rows_a[0]["flip"], rows_a[0]["command"]) == ("mbf", "True", "topofr eval X")
    assert (rows_a[0]["degenerate"], rows_b[0]["degenerate"]) == ("False", "True")
    before = (run_a / "eval" / "step_00000005" / "verification.csv").read_bytes()
    again = _eval(model_a)
    assert again.exit_code == 2
    clash = run_a / "eval" / "step_00000005" / "verification.csv"
    assert again.output.strip().splitlines()[-1] == (
        f"error: {clash}: already exists (results of an earlier run; "
        "pass --overwrite to replace them or choose another --out)"
    )
    assert clash.read_bytes() == before
    assert _eval(model_a, "--overwrite").exit_code == 0


def test_collapsed_models_and_unresolvable_far_are_warned(checkpoint, tmp_path):
    healthy = _eval(checkpoint["path"], "--out", tmp_path / "healthy")
    assert healthy.exit_code == 0, healthy.output
    warnings = [line for line in healthy.output.splitlines() if line.startswith("warning:")]
    # 10 pairs: each fold's VAL threshold is set on 4 or 5 impostor pairs
    assert warnings == [
        "warning: synthetic_val: VAL@FAR=1e-3 is not resolvable: each fold's threshold is set on "
        "as few as 4 impostor pairs, fewer than 1/FAR = 1000"
    ]
    table_row = next(line for line in healthy.output.splitlines() if "synthetic_val" in line and "│" in line)
    assert table_row.split("│")[5].strip() == "n/a"  # the VAL column: no number the pairs cannot support
    row = _read_csv(tmp_path / "healthy" / "verification.csv")[0]
    assert (row["threshold_impostors"], row["val_resolvable"], row["degenerate"]) == ("4", "False", "False")
    collapsed = _eval(_run_checkpoint(checkpoint, tmp_path / "run", collapse=True))
    assert collapsed.exit_code == 0, collapsed.output
    assert "warning: synthetic_val: degenerate embeddings (mean cosine between different images 1.0000)" in (
        collapsed.output.replace("\n", " ")
    )


def test_eval_says_when_it_starts_fewer_workers_than_asked(checkpoint, tmp_path):
    from topofr_cli.data.workers import usable_cores

    args = ["eval", str(checkpoint["path"]), "--bin", str(checkpoint["bin"]), "--no-flip", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--workers", "1000", "--out", str(tmp_path / "many")])
    assert result.exit_code == 0, result.output
    cores = usable_cores()
    assert f"--workers 1000: using {cores} worker" in " ".join(result.output.split())
    serial = runner.invoke(app, [*args, "--workers", "0", "--out", str(tmp_path / "serial")])
    assert serial.exit_code == 0 and "--workers 0" not in serial.output
    many, one = (
        _read_csv(tmp_path / "many" / "verification.csv"),
        _read_csv(tmp_path / "serial" / "verification.csv"),
    )
    assert many[0]["accuracy"] == one[0]["accuracy"] and many[0]["auc"] == one[0]["auc"]
