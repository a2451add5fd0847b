"""Hostile inputs through the CLI: exit 2, one line naming the file (and record/key/line), nothing left behind."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from writers.rec_writer import smooth_jpeg, write_rec

from topofr_cli import __version__
from topofr_cli.cli.app import app
from topofr_cli.config import Recipe
from topofr_cli.data.images import encode_jpeg
from topofr_cli.data.packed import PackedWriter
from topofr_cli.models import create_backbone

_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output  # (a progress bar may have been drawn before it)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# -- RecordIO -------------------------------------------------------------------------------------


def _rec(tmp_path, header=True, labels=(0, 1, 1)):
    folder = tmp_path / "rec"
    images = [smooth_jpeg(i) for i in range(len(labels))]
    rec, idx = write_rec(folder, images, list(labels), header=header, num_classes=2)
    return folder, rec, idx


def _label_offset(idx, key):
    """Byte of the scalar label of record `key` (frame header 8 + flag 4)."""
    offsets = dict(line.split("\t") for line in idx.read_text().splitlines())
    return int(offsets[str(key)]) + 12


def _poke(path, at, data):
    blob = bytearray(path.read_bytes())
    blob[at : at + len(data)] = data
    path.write_bytes(bytes(blob))


def test_rec_header_record_claiming_a_billion_images(tmp_path):
    """4 bytes (label[0] of the header record, where image keys end) used to size an 8-GB array."""
    folder, rec, idx = _rec(tmp_path)
    _poke(rec, 8 + 24, struct.pack("<f", 3e9))
    result = run("prepare", "rec", folder, tmp_path / "out")
    one_error_line(result, "train.rec key 0", "header record says image keys end at 3")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("value", "shown"),
    [(float("nan"), "label nan"), (float("inf"), "label inf"), (3e38, "label 3.0"), (-1.0, "label -1.0")],
)
def test_rec_labels_that_are_not_class_ids(tmp_path, value, shown):
    folder, rec, idx = _rec(tmp_path)
    _poke(rec, _label_offset(idx, 2), struct.pack("<f", value))
    result = run("prepare", "rec", folder, tmp_path / "out")
    one_error_line(result, "train.rec key 2", shown, "is not a class id")
    assert not (tmp_path / "out").exists()


def test_rec_idx_offset_beyond_int64(tmp_path):
    folder, rec, idx = _rec(tmp_path)
    idx.write_text(idx.read_text() + f"9\t{2**64}\n")  # after 6 records (header, 3 images, 2 identities)
    result = run("prepare", "rec", folder, tmp_path / "out")
    one_error_line(result, "train.idx line 7", "out of range")
    assert not (tmp_path / "out").exists()


def test_rec_property_not_utf8(tmp_path):
    folder, rec, idx = _rec(tmp_path)
    (folder / "property").write_bytes(b"\xff\xfe2,112,112")
    one_error_line(run("prepare", "rec", folder, tmp_path / "out"), "property line 1: not UTF-8")
    (folder / "property").write_bytes(b"-5,112,112")
    one_error_line(run("prepare", "rec", folder, tmp_path / "out"), "property line 1: num_classes -5")
    assert not (tmp_path / "out").exists()


def test_markup_and_control_characters_in_a_path_are_shown_literally(tmp_path):
    folder = tmp_path / "[bold]x[/bold]\x1b[2J"
    result = run("prepare", "rec", folder, tmp_path / "out")
    line = one_error_line(result, "[bold]x[/bold]\\x1b[2J", "no .rec file found")
    assert "\x1b" not in line


# -- images and image folders ---------------------------------------------------------------------


def test_decompression_bomb_image(tmp_path):
    faces = tmp_path / "faces" / "ann"
    faces.mkdir(parents=True)
    (faces / "ok.jpg").write_bytes(smooth_jpeg(0))
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 Mpixel in ~80 kB
    (faces / "bomb.png").write_bytes(buffer.getvalue())
    result = run("prepare", "folder", tmp_path / "faces", tmp_path / "out")
    one_error_line(result, "ann/bomb.png", "9000 x 9000 pixels is larger than the limit")
    assert not (tmp_path / "out").exists() and listing(tmp_path) == [
        "faces",
        "faces/ann",
        "faces/ann/bomb.png",
        "faces/ann/ok.jpg",
    ]


def test_non_utf8_file_names_are_packed_with_escaped_keys(tmp_path):
    root = os.path.join(os.fsencode(tmp_path), b"faces")
    for identity in (b"ann", b"b\xffn"):
        os.makedirs(os.path.join(root, identity))
        with open(os.path.join(root, identity, b"caf\xe9.jpg"), "wb") as handle:
            handle.write(smooth_jpeg(len(identity)))
    result = run("prepare", "folder", tmp_path / "faces", tmp_path / "out")
    assert result.exit_code == 0, result.output
    from topofr_cli.data import open_dataset

    packed = open_dataset(tmp_path / "out")
    assert [packed.source_key(i) for i in range(2)] == ["ann/caf\\xe9.jpg", "b\\xffn/caf\\xe9.jpg"]
    assert packed.meta["identities"] == ["ann", "b\\xffn"]


# -- .bin files -----------------------------------------------------------------------------------


@pytest.fixture
def bare_model(tmp_path):
    path = tmp_path / "backbone.pt"
    torch.save(create_backbone("mbf", 8).state_dict(), path)
    return path


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (
            ([_Reduce(__import__("_codecs").encode, ("x", "no-such-codec"))] * 2, [True]),
            "codec 'no-such-codec'",
        ),
        (
            ([_Reduce(_reconstruct, (np.ndarray, (3_500_000_000,), b"b"))] * 2, [True]),
            "empty array of shape (3500000000,)",
        ),
        (([_Reduce(np.ndarray, ((3_500_000_000,),))] * 2, [True]), "numpy.ndarray called directly"),
    ],
)
def test_bin_that_asks_for_bad_codecs_or_huge_arrays(tmp_path, bare_model, payload, fragment):
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(payload, protocol=2))
    result = run(
        "eval",
        bare_model,
        "--bin",
        tmp_path / "evil.bin",
        "--out",
        tmp_path / "report",
        "--device",
        "cpu",
        "--num-workers",
        0,
    )
    one_error_line(result, "evil.bin: refused to load", fragment)
    assert not (tmp_path / "report").exists()


def test_prepare_bin_refuses_images_outside_the_csv_folder(tmp_path):
    (tmp_path / "secret.txt").write_bytes(b"private key")
    pairs = tmp_path / "set" / "pairs.csv"
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jpg").write_bytes(smooth_jpeg(0))
    for other in ("../secret.txt", str(tmp_path / "secret.txt")):
        pairs.write_text(f"a.jpg,{other},1\n")
        result = run("prepare", "bin", pairs, tmp_path / "out.bin", "--no-verify")
        one_error_line(result, "pairs.csv line 1", "is not inside the CSV's folder")
        assert not (tmp_path / "out.bin").exists()
    os.symlink(tmp_path / "secret.txt", tmp_path / "set" / "link.jpg")
    pairs.write_text("a.jpg,link.jpg,1\n")
    one_error_line(
        run("prepare", "bin", pairs, tmp_path / "out.bin", "--no-verify"), "'link.jpg' is not inside"
    )
    assert listing(tmp_path) == ["secret.txt", "set", "set/a.jpg", "set/link.jpg", "set/pairs.csv"]


# -- packed sets and hard-samples --write-clean ---------------------------------------------------


@pytest.fixture
def model_and_set(tmp_path):
    """A tiny checkpoint with a 2-class classifier and a packed set of 4 images it can score."""
    recipe = Recipe().to_dict()
    recipe["model"].update(network="mbf", embedding_size=8)
    checkpoint = {
        "format": "topofr-checkpoint",
        "topofr_version": __version__,
        "model": {"network": "mbf", "embedding_size": 8, "num_classes": 2},
        "recipe": recipe,
        "step": 1,
        "epoch": 0,
        "backbone": create_backbone("mbf", 8).state_dict(),
        "classifier": torch.randn(2, 8),
        "latent_scale": None,
    }
    model = tmp_path / "model.pt"
    torch.save(checkpoint, model)
    data = tmp_path / "data"
    with PackedWriter(data, source="test") as writer:
        for i in range(4):
            writer.add(encode_jpeg(np.full((112, 112, 3), 40 * i, np.uint8)), i % 2, f"img{i}.jpg")
        writer.finish({"num_classes": 2})
    return model, data


def _set_meta(data, **changes):
    meta = json.loads((data / "meta.json").read_text())
    meta.update(changes)
    (data / "meta.json").write_text(json.dumps(meta))


def _hard_samples(tmp_path, model, data):
    return run(
        "hard-samples",
        model,
        "--data",
        data,
        "--out",
        tmp_path / "report",
        "--device",
        "cpu",
        "--workers",
        0,
        "--batch-size",
        4,
        "--write-clean",
        tmp_path / "clean",
        "--drop-top",
        1,
    )


def test_write_clean_refuses_a_bin_entry_escaping_through_a_symlink(tmp_path, model_and_set):
    model, data = model_and_set
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    os.symlink(work, data / "s")
    (tmp_path / "payload.sh").write_text("echo pwned\n")
    _set_meta(data, verification_bins=["s/../../../../payload.sh"])
    before = listing(tmp_path)
    one_error_line(
        _hard_samples(tmp_path, model, data),
        "meta.json: verification_bins entry "
        "'s/../../../../payload.sh' is not a relative name inside the dataset folder",
    )
    _set_meta(data, verification_bins=["s/x.bin"])
    (work / "x.bin").write_bytes(b"outside")
    before = listing(tmp_path)
    one_error_line(_hard_samples(tmp_path, model, data), "entry 's/x.bin' resolves to", "not a file inside")
    assert listing(tmp_path) == before  # no report, no clean set, nothing above


def test_write_clean_refuses_an_absolute_bin_entry(tmp_path, model_and_set):
    model, data = model_and_set
    _set_meta(data, verification_bins=[str(data / "index.parquet")])
    before = listing(tmp_path)
    one_error_line(_hard_samples(tmp_path, model, data), "is not a relative name inside the dataset folder")
    assert listing(tmp_path) == before


def test_write_clean_copies_a_safe_bin_under_its_base_name(tmp_path, model_and_set):
    model, data = model_and_set
    (data / "pairs").mkdir()
    (data / "pairs" / "val.bin").write_bytes(b"pairs")
    _set_meta(data, verification_bins=["pairs/val.bin", "missing.bin"])
    result = _hard_samples(tmp_path, model, data)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clean" / "val.bin").read_bytes() == b"pairs"
    assert json.loads((tmp_path / "clean" / "meta.json").read_text())["verification_bins"] == ["val.bin"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"num_classes": "2"}, "key 'num_classes' must be an integer"),
        ({"num_images": 4.0}, "key 'num_images' must be an integer"),
    ],
)
def test_packed_meta_with_wrong_types(tmp_path, model_and_set, change, fragment):
    model, data = model_and_set
    _set_meta(data, **change)
    one_error_line(_hard_samples(tmp_path, model, data), "data/meta.json", fragment)
    assert not (tmp_path / "report").exists() and not (tmp_path / "clean").exists()


def test_packed_meta_not_utf8(tmp_path, model_and_set):
    model, data = model_and_set
    (data / "meta.json").write_bytes(b'{"format": "topofr-packed", "source": "\xff"}')
    one_error_line(_hard_samples(tmp_path, model, data), "data/meta.json: not UTF-8 text")


def test_packed_index_with_a_damaged_key_column(tmp_path, model_and_set):
    import pyarrow as pa
    import pyarrow.parquet as pq

    model, data = model_and_set
    table = pq.read_table(data / "index.parquet")
    table = table.set_column(4, "key", pa.array([1, 2, 3, 4]))
    pq.write_table(table, data / "index.parquet")
    one_error_line(_hard_samples(tmp_path, model, data), "index.parquet: column 'key' has type int64")


# -- recipes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "overrides", "fragment"),
    [
        (b"data:\n  path: caf\xe9\n", [], "not UTF-8 text"),
        (b"optim: {lr: 0.1}\noptim: {lr: 0.2}\n", [], "line 2: key 'optim' given twice"),
        (b"data: " + b"[" * 5000 + b"]" * 5000 + b"\n", [], "nested deeper than 64 levels"),
        (b"{}\n", ["data.batch_size=0"], "key 'data.batch_size' must be in [1, 1048576], got 0"),
        (b"{}\n", ["train.log_every=0"], "key 'train.log_every' must be in [1, "),
        (b"{}\n", ["schedule.epochs=0"], "key 'schedule.epochs' must be in [1, "),
        (b"{}\n", ["optim.lr=.nan"], "key 'optim.lr' must be in (0, 1e+06], got nan"),
        (b"{}\n", ["train.max_bad_steps=0"], "key 'train.max_bad_steps' must be in [1, "),
    ],
)
def test_train_refuses_bad_recipes_before_creating_anything(tmp_path, text, overrides, fragment):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text)
    args = ["train", recipe, "--set", f"train.output={tmp_path / 'run'}"]
    for override in overrides:
        args += ["--set", override]
    one_error_line(run(*args), "r.yaml", fragment)
    assert listing(tmp_path) == ["r.yaml"]
