"""Output safety (artifacts/outputs.py, artifacts/output_lock.py), per command that writes a folder or
file, as a user would meet it: `--overwrite` replaces only what topofr wrote and never an input, a
folder holding one or anything inside one; an output another command is writing is refused. Each
refusal is one line and exit 2, and every file that was there keeps its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from topofr_cli.artifacts.output_lock import claim_output, lock_path
from topofr_cli.artifacts.outputs import MARKER
from topofr_cli.cli.app import app

runner = CliRunner()
EMBEDDING = 32


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`, hidden ones included."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def refused(args: list[str], words: str) -> str:
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), (
        result.output
    )  # eval names its model first
    assert words in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def world(make_tiny_dataset, calibrated_backbone, tmp_path_factory):
    """A user's folder: a packed set with its .bin, a checkpoint trained on it (contract format), a
    photo folder and a pairs CSV, next to a file of the user's own."""
    root = tmp_path_factory.mktemp("safety")
    data = make_tiny_dataset(root / "datasets" / "tiny", classes=4, per_class=4, pairs=20)
    (root / "datasets" / "notes.txt").write_text("the user's only copy")
    model = calibrated_backbone("mbf", EMBEDDING)
    checkpoint = root / "run" / "checkpoints" / "step_00000005.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(
        {
            "format": "topofr-checkpoint",
            "model": {"network": "mbf", "embedding_size": EMBEDDING, "num_classes": 4},
            "recipe": {"data": {"path": str(data)}},
            "step": 5,
            "epoch": 0,
            "backbone": model.state_dict(),
            "classifier": torch.randn(4, EMBEDDING),
            "training": {},
        },
        checkpoint,
    )
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for identity in ("ann", "bob"):
        (photos / identity).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
                photos / identity / f"{k}.png"
            )
    (photos / "pairs.csv").write_text("path1,path2,issame\nann/0.png,ann/1.png,1\nann/0.png,bob/0.png,0\n")
    return {"root": root, "data": data, "model": checkpoint, "photos": photos}


def _unchanged(world, action) -> None:
    before = snapshot(world["root"])
    action()
    assert snapshot(world["root"]) == before


# --overwrite never reaches an input, a folder holding one, or a folder topofr did not write.
def test_prepare_synthetic_overwrite_refuses_a_folder_topofr_did_not_write(world):
    _unchanged(
        world,
        lambda: refused(
            ["prepare", "synthetic", world["root"] / "datasets", "--identities", "4", "--overwrite"],
            "was not written by topofr",
        ),
    )


@pytest.mark.parametrize(("where", "words"), [("parent", "holds"), ("inside", "lies inside"), ("same", "is")])
def test_prepare_folder_refuses_its_own_source(world, where, words):
    photos = world["photos"]
    out = {"parent": photos.parent, "inside": photos / "packed", "same": photos}[where]
    _unchanged(world, lambda: refused(["prepare", "folder", photos, out, "--overwrite"], words))


def test_prepare_bin_refuses_its_pairs_csv(world):
    csv = world["photos"] / "pairs.csv"
    _unchanged(world, lambda: refused(["prepare", "bin", csv, csv, "--overwrite"], "is"))


@pytest.mark.parametrize(("where", "words"), [("parent", "holds"), ("same", "is")])
def test_hard_samples_write_clean_refuses_the_dataset_and_its_parent(world, where, words):
    clean = {"parent": world["data"].parent, "same": world["data"]}[where]
    args = ["hard-samples", world["model"], "--data", world["data"], "--out", world["root"] / "hard"]
    _unchanged(
        world, lambda: refused([*args, "--write-clean", clean, "--drop-top", "1", "--overwrite"], words)
    )


def test_eval_overwrite_refuses_results_in_a_folder_topofr_did_not_write(world):
    folder = world["root"] / "mine"
    folder.mkdir()
    (folder / "verification.csv").write_text("the user's own table\n")
    args = ["eval", world["model"], "--device", "cpu", "--workers", "0", "--out", folder, "--overwrite"]
    _unchanged(world, lambda: refused(args, "was not written by topofr"))
    (folder / "verification.csv").unlink()
    folder.rmdir()


def test_eval_embeddings_never_replace_the_model(world):
    args = [
        "eval",
        world["model"],
        "--data",
        world["data"],
        "--embeddings",
        world["model"],
        "--device",
        "cpu",
    ]
    _unchanged(world, lambda: refused(args, "is"))


def test_eval_embeddings_never_go_inside_the_dataset_they_embed(world):
    embeddings = world["data"] / "embeddings.npy"
    args = ["eval", world["model"], "--data", world["data"], "--embeddings", embeddings, "--device", "cpu"]
    _unchanged(world, lambda: refused(args, "lies inside"))


def test_analyze_topology_refuses_a_folder_holding_its_dataset(world):
    args = ["analyze-topology", "--no-model", "--data", world["data"], "--out", world["root"] / "datasets"]
    _unchanged(world, lambda: refused([*args, "--overwrite"], "holds"))


def test_export_never_replaces_the_model(world):
    _unchanged(world, lambda: refused(["export", world["model"], world["model"]], "is"))


def test_train_overwrite_refuses_the_folder_holding_its_data(world, tiny_recipe_file, tmp_path):
    recipe = tiny_recipe_file(tmp_path, world["data"], world["data"].parent)
    _unchanged(world, lambda: refused(["train", recipe, "--overwrite"], "holds"))


def test_train_overwrite_refuses_a_folder_topofr_did_not_write(world, tiny_recipe_file, tmp_path):
    output = world["root"] / "photos"  # the user's photo folder named as train.output by mistake
    recipe = tiny_recipe_file(tmp_path, world["data"], output)
    _unchanged(world, lambda: refused(["train", recipe, "--overwrite"], "was not written by topofr"))


# One writer per output: a second command writing the same output gets one line and touches nothing.
def _writers(world) -> dict[str, tuple[list, Path]]:
    root, model, data = world["root"], world["model"], world["data"]
    return {
        "eval": (["eval", model, "--device", "cpu", "--workers", "0", "--out", root / "o"], root / "o"),
        "hard-samples": (
            ["hard-samples", model, "--data", data, "--device", "cpu", "--out", root / "o"],
            root / "o",
        ),
        "analyze-topology": (
            ["analyze-topology", "--no-model", "--data", data, "--out", root / "o"],
            root / "o",
        ),
        "export": (["export", model, root / "o.onnx"], root / "o.onnx"),
        "prepare folder": (["prepare", "folder", world["photos"], root / "o"], root / "o"),
        "prepare synthetic": (["prepare", "synthetic", root / "o", "--identities", "4"], root / "o"),
        "write-clean": (
            [
                "hard-samples",
                model,
                "--data",
                data,
                "--out",
                root / "h",
                "--write-clean",
                root / "o",
                "--drop-top",
                "1",
            ],
            root / "o",
        ),
    }


@pytest.mark.parametrize(
    "command",
    [
        "eval",
        "hard-samples",
        "analyze-topology",
        "export",
        "prepare folder",
        "prepare synthetic",
        "write-clean",
    ],
)
def test_an_output_being_written_is_refused_to_a_second_writer(world, command):
    args, output = _writers(world)[command]
    with claim_output(output):  # the first writer, mid-way
        before = snapshot(world["root"])
        refused(args, "another topofr command")
        assert snapshot(world["root"]) == before
    assert not lock_path(output).exists()


def test_a_claim_is_released_and_the_output_marked_as_topofr_s(world, tmp_path):
    out = tmp_path / "eval"
    args = ["eval", str(world["model"]), "--device", "cpu", "--workers", "0", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert json.loads((out / MARKER).read_text())["command"] == "eval"
    assert not lock_path(out).exists()
    again = runner.invoke(app, [*args, "--overwrite"])  # its own results: replaced
    assert again.exit_code == 0, again.output


def test_a_claim_from_another_process_refuses_and_a_dead_holder_does_not(tmp_path):
    import subprocess
    import sys

    output = tmp_path / "new" / "deeper" / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom topofr_cli.artifacts.output_lock import claim_output\n"
            f"with claim_output({str(output)!r}):\n    print('held', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(Exception, match=rf"another topofr command \(process {holder.pid}\)"),
            claim_output(output),
        ):
            pass
    finally:
        holder.kill()  # kill -9: the kernel drops the lock, the file stays behind
        holder.wait()
    assert lock_path(output).exists()
    with claim_output(output):  # a dead holder's file does not block
        pass
    assert not lock_path(output).exists()
    with claim_output(tmp_path / "fresh" / "out"):
        assert lock_path(tmp_path / "fresh" / "out").exists()
    assert not (tmp_path / "fresh").exists()  # the parent the claim created, still empty, is gone


@pytest.mark.parametrize(("where", "words"), [("parent", "holds"), ("same", "is")])
def test_prepare_rec_refuses_its_own_recordio_folder(tmp_path, where, words):
    from writers.rec_writer import smooth_jpeg, write_rec

    source = tmp_path / "faces" / "rec"
    source.mkdir(parents=True)
    write_rec(source, [smooth_jpeg(k) for k in range(4)], [0, 0, 1, 1], header=False)
    out = {"parent": source.parent, "same": source}[where]
    before = snapshot(tmp_path)
    refused(["prepare", "rec", source, out, "--overwrite"], words)
    assert snapshot(tmp_path) == before


def test_bench_out_keeps_a_users_results_folder(tmp_path):
    """bench --out into a folder of the user's holding a bench.json: refused without --overwrite, and
    with it too (topofr never wrote that folder); refused before any measurement, nothing touched."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "bench.json").write_text("the user's own numbers")
    before = snapshot(tmp_path)
    refused(["bench", "--device", "cpu", "--quick", "--out", folder], "already exists")
    refused(["bench", "--device", "cpu", "--quick", "--out", folder, "--overwrite"], "not written by topofr")
    assert snapshot(tmp_path) == before
