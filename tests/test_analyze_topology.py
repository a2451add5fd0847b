"""`topofr analyze-topology` through Typer's runner on a tiny packed set and tiny mbf runs.

Truth is computed independently in the test: pixel distances in numpy from the arrays the test
generated, embeddings by running the checkpoint's weights here, diagrams by plain gudhi Rips.
"""

from __future__ import annotations

import io
import json
import math

import gudhi
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from topofr_cli import __version__
from topofr_cli.cli.app import app
from topofr_cli.data.packed import PackedWriter
from topofr_cli.models import create_backbone

runner = CliRunner()
IDENTITIES, PER_IDENTITY, EMBEDDING = 8, 6, 16
SAMPLE_ARGS = ["--samples", "24", "--per-identity", "4", "--seed", "3", "--batch-size", "16"]
LATENT_SCALE = 2.0


def face_like_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 112, 112, 3]: per identity a colour and a stripe pattern, per image noise and shifts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112] / 112.0
    images, labels = [], []
    for identity in range(IDENTITIES):
        colour = rng.uniform(40, 215, 3)
        frequency, phase = rng.uniform(2, 9), rng.uniform(0, 6)
        for _ in range(PER_IDENTITY):
            pattern = np.sin(2 * np.pi * frequency * (xx + rng.uniform(-0.05, 0.05)) + phase)
            image = colour + 35 * pattern[..., None] + rng.normal(0, 12, (112, 112, 3))
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(identity)
    return np.stack(images), np.asarray(labels)


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two shared cores: torch's intra-op threads only fight the H1 threads and each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    images, labels = face_like_images()
    out = tmp_path_factory.mktemp("data") / "packed"
    with PackedWriter(out, source="test") as writer:
        for i, (rgb, label) in enumerate(zip(images, labels, strict=True)):
            writer.add(png(rgb), int(label), f"img{i}")
        writer.finish()
    return out, images, labels


def calibrated_mbf(seed: int) -> torch.nn.Module:
    """An mbf whose BatchNorm statistics fit [-1, 1] images (a fresh one maps everything near 0)."""
    torch.manual_seed(seed)
    model = create_backbone("mbf", EMBEDDING)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: the statistics of this one batch
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return model.eval()


def write_checkpoint(path, state, step, *, embedding_size=EMBEDDING, latent_scale=LATENT_SCALE):
    """A checkpoint in the contract format (docs/interfaces.md, Engine), written independently here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "topofr-checkpoint",
            "topofr_version": __version__,
            "model": {"network": "mbf", "embedding_size": embedding_size, "num_classes": IDENTITIES},
            "recipe": {},
            "step": step,
            "epoch": 0,
            "backbone": state,
            "classifier": torch.randn(IDENTITIES, EMBEDDING),
            "latent_scale": latent_scale,
            "training": {},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A with 3 checkpoints (weights drifting with the step) and run B with 2 (kept small: CPU time)."""
    root = tmp_path_factory.mktemp("runs")
    states = {}
    for name, seed, steps in (("arcface", 0, (0, 20, 30)), ("topofr", 1, (10, 20))):
        base = calibrated_mbf(seed).state_dict()
        generator = torch.Generator().manual_seed(seed + 100)
        for step in steps:
            state = {
                k: (
                    v + 0.02 * (step / 10) * torch.randn(v.shape, generator=generator) * v.std()
                    if v.is_floating_point() and v.ndim > 1
                    else v.clone()
                )
                for k, v in base.items()
            }
            write_checkpoint(root / name / "checkpoints" / f"step_{step:08d}.pt", state, step)
            states[(name, step)] = state
    return root, states


def invoke(*args):
    return runner.invoke(app, ["analyze-topology", *map(str, args)])


def reference_diagrams(dist: np.ndarray) -> dict[int, np.ndarray]:
    tree = gudhi.RipsComplex(distance_matrix=dist).create_simplex_tree(max_dimension=2)
    tree.persistence()
    out = {}
    for dim in (0, 1):
        pairs = np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
        out[dim] = pairs[np.isfinite(pairs[:, 1])]
    return out


def pixel_distances(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64).transpose(0, 3, 1, 2).reshape(len(images), -1) / 255.0 * 2 - 1
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt((diff**2).sum(-1)) / math.sqrt(4 * x.shape[1])  # docs/method.md §1.2


def diagram(frame: pd.DataFrame, space: str, dim: int, model=None, step=None) -> np.ndarray:
    rows = frame[(frame.space == space) & (frame.dim == dim)]
    rows = rows[rows.model.isna()] if model is None else rows[(rows.model == model) & (rows.step == step)]
    return rows[["birth", "death"]].to_numpy()


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_no_model_input_space_matches_gudhi(dataset, tmp_path):
    data_dir, images, labels = dataset
    out = tmp_path / "analysis"
    result = invoke("--no-model", "--data", data_dir, "--out", out, *SAMPLE_ARGS)
    assert result.exit_code == 0, result.output
    assert "input space" in result.output and "H1" in result.output
    summary = json.loads((out / "summary.json").read_text())
    indices = np.asarray(summary["sample_indices"])
    assert summary["samples"] == 24 and summary["identities"] == 6 and summary["targets"] == []
    assert sorted(np.bincount(labels[indices]).tolist())[-6:] == [4] * 6
    frame = pd.read_parquet(out / "diagrams.parquet")
    assert set(frame.space) == {"input"} and list(frame.columns[-4:]) == ["space", "dim", "birth", "death"]
    reference = reference_diagrams(pixel_distances(images[indices]))
    h0 = diagram(frame, "input", 0)
    assert len(h0) == 23 and (h0[:, 0] == 0).all()
    np.testing.assert_allclose(np.sort(h0[:, 1]), np.sort(reference[0][:, 1]), rtol=1e-5)
    h1 = diagram(frame, "input", 1)
    assert len(h1) == len(reference[1])
    assert gudhi.bottleneck_distance(h1, reference[1]) < 1e-5
    for name in ("persistence_diagrams", "barcodes", "death_histograms", "input_pca"):
        assert_png(out / f"{name}.png")
    # The earlier analysis is kept unless --overwrite; then, same seed, same sample.
    refused = invoke("--no-model", "--data", data_dir, "--out", out, *SAMPLE_ARGS, "--dims", "0")
    assert refused.exit_code == 2 and "earlier analysis (pass --overwrite" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert set(pd.read_parquet(out / "diagrams.parquet").dim) == {0, 1}
    again = invoke("--no-model", "--data", data_dir, "--out", out, *SAMPLE_ARGS, "--dims", "0", "--overwrite")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["sample_indices"] == summary["sample_indices"]
    assert set(pd.read_parquet(out / "diagrams.parquet").dim) == {0}


def test_two_runs_give_collapse_curves_matching_independent_truth(dataset, runs, tmp_path):
    data_dir, images, _ = dataset
    root, states = runs
    out = tmp_path / "analysis"
    result = invoke(
        root / "arcface", root / "topofr", "--data", data_dir, "--out", out, "--device", "cpu", *SAMPLE_ARGS
    )
    assert result.exit_code == 0, result.output
    assert "arcface" in result.output and "PTSA" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [t["label"] for t in summary["targets"]] == ["arcface", "topofr"]
    assert [p["step"] for p in summary["targets"][0]["points"]] == [0, 20, 30]
    assert summary["targets"][0]["points"][0]["latent_scale"] == LATENT_SCALE
    assert not any(p["degenerate"] for t in summary["targets"] for p in t["points"])
    assert "warning" not in result.output
    curve = pd.read_csv(out / "distances.csv")
    assert len(curve) == (3 + 2) * 2 * 2  # checkpoints × (latent, latent_l2) × (H0, H1)
    # A run is pictured at its last checkpoint, and at step 0 (the initial model) when it has one.
    for name in (
        "arcface_step00000030_persistence_diagrams",
        "arcface_step00000000_persistence_diagrams",
        "topofr_step00000020_barcodes",
        "arcface_step00000030_death_histograms",
        "topofr_step00000020_latent_pca",
        "collapse_curve",
        "collapse_curve_l2",
    ):
        assert_png(out / f"{name}.png")

    # Independent truth for run A's last checkpoint: embed here, distances / λ, plain gudhi.
    indices = np.asarray(summary["sample_indices"])
    model = create_backbone("mbf", EMBEDDING)
    model.load_state_dict(states[("arcface", 30)])
    pixels = torch.from_numpy(images[indices]).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    with torch.no_grad():
        z = model.eval()(pixels).double().numpy()
    latent = np.linalg.norm(z[:, None] - z[None], axis=-1) / LATENT_SCALE
    ref_latent = reference_diagrams(latent)
    ref_input = reference_diagrams(pixel_distances(images[indices]))
    frame = pd.read_parquet(out / "diagrams.parquet")
    ours_h0 = diagram(frame, "latent", 0, "arcface", 30)
    np.testing.assert_allclose(np.sort(ours_h0[:, 1]), np.sort(ref_latent[0][:, 1]), rtol=1e-4)
    assert gudhi.bottleneck_distance(diagram(frame, "latent", 1, "arcface", 30), ref_latent[1]) < 1e-4
    row = curve[(curve.run == "arcface") & (curve.step == 30) & (curve.space == "latent") & (curve.dim == 1)]
    expected = gudhi.bottleneck_distance(ref_input[1], ref_latent[1])
    assert row.bottleneck.item() == pytest.approx(expected, abs=1e-4)
    deaths_x, deaths_z = np.sort(ref_input[0][:, 1]), np.sort(ref_latent[0][:, 1])
    assert row.ptsa_official.item() == pytest.approx(((deaths_x - deaths_z) ** 2).sum() / 24, rel=1e-4)
    # The drifting weights really change the curve from one checkpoint to the next.
    steps = curve[(curve.run == "arcface") & (curve.space == "latent") & (curve.dim == 0)]
    assert steps.wasserstein_2.nunique() == 3


def test_single_checkpoint_file(dataset, runs, tmp_path):
    data_dir, _, _ = dataset
    root, _ = runs
    checkpoint = root / "topofr" / "checkpoints" / "step_00000020.pt"
    out = tmp_path / "one"
    result = invoke(checkpoint, "--data", data_dir, "--out", out, *SAMPLE_ARGS, "--dims", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    (target,) = summary["targets"]
    assert target["kind"] == "model" and target["points"][0]["step"] == 20
    assert set(target["points"][0]["spaces"]) == {"latent", "latent_l2"}
    assert not (out / "collapse_curve.png").exists()
    assert_png(out / "topofr_step00000020_persistence_diagrams.png")
    assert not (out / "topofr_step00000010_persistence_diagrams.png").exists()


def test_collapsed_model_is_flagged_and_results_go_beside_its_run(dataset, runs, tmp_path):
    """A model whose every embedding is the same vector: a yellow warning and `degenerate` in summary.json."""
    data_dir, _, _ = dataset
    _, states = runs
    state = {k: v.clone() for k, v in states[("arcface", 20)].items()}
    state["features.layers.3.weight"].zero_()  # the last BatchNorm now outputs its bias alone
    state["features.layers.3.bias"].fill_(1.0)
    checkpoint = write_checkpoint(tmp_path / "runC" / "checkpoints" / "step_00000005.pt", state, 5)
    result = invoke(checkpoint, "--data", data_dir, *SAMPLE_ARGS, "--dims", "0")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1
        and "degenerate embeddings (mean cosine between different images 1.0000)" in warnings[0]
    )
    out = tmp_path / "runC" / "analyze-topology" / "step_00000005"  # the default: beside the run
    point = json.loads((out / "summary.json").read_text())["targets"][0]["points"][0]
    assert point["degenerate"] is True and point["mean_cosine"] == pytest.approx(1.0)
    again = invoke(checkpoint, "--data", data_dir, *SAMPLE_ARGS, "--dims", "0")
    _one_line_error(again, "holds an earlier analysis (pass --overwrite")


def _one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    # Progress bars may precede it; the error itself is exactly one line.
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    assert result.output.rstrip().endswith(errors[0]), result.output


def test_bad_inputs(dataset, runs, tmp_path):
    data_dir, _, _ = dataset
    root, states = runs
    _one_line_error(
        invoke("--no-model", "--data", data_dir, "--samples", "500", "--out", tmp_path / "a"),
        "fewer than the 500 samples",
    )
    _one_line_error(
        invoke(
            "--no-model",
            "--data",
            data_dir,
            "--samples",
            "40",
            "--per-identity",
            "8",
            "--out",
            tmp_path / "a",
        ),
        "fewer samples than requested",
    )
    (tmp_path / "empty_run").mkdir()
    _one_line_error(
        invoke(tmp_path / "empty_run", "--data", data_dir, "--out", tmp_path / "a"), "no checkpoints"
    )
    wrong = write_checkpoint(tmp_path / "wrong.pt", states[("arcface", 20)], 20, embedding_size=32)
    _one_line_error(invoke(wrong, "--data", data_dir, "--out", tmp_path / "a", *SAMPLE_ARGS), "wrong.pt")
    _one_line_error(invoke(root / "arcface", "--no-model", "--data", data_dir), "--no-model")
    _one_line_error(invoke("--data", data_dir), "MODEL_OR_RUN_DIR")
    _one_line_error(invoke("--no-model", "--data", data_dir, "--dims", "2"), "--dims")
    _one_line_error(invoke("--no-model", "--data", tmp_path / "missing"), "missing")
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    _one_line_error(
        invoke("--no-model", "--data", data_dir, "--out", keep, *SAMPLE_ARGS), "not an earlier analysis"
    )
    assert (keep / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists()


def test_figure_format_option(dataset, tmp_path):
    data_dir, _, _ = dataset
    out = tmp_path / "svg"
    result = invoke(
        "--no-model", "--data", data_dir, "--out", out, *SAMPLE_ARGS, "--dims", "0", "--figure-format", "svg"
    )
    assert result.exit_code == 0, result.output
    assert "<svg" in (out / "persistence_diagrams.svg").read_text() and not list(out.glob("*.png"))
    _one_line_error(
        invoke("--no-model", "--data", data_dir, "--out", tmp_path / "x", "--figure-format", "gif"),
        "--figure-format gif",
    )
    assert not (tmp_path / "x").exists()
