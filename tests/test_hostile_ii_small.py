"""The small hostile cases of issue 19 (class 10): each one line naming the file or key, exit 2."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from typer.testing import CliRunner
from writers.rec_writer import smooth_jpeg, write_rec

from topofr_cli.cli.app import app
from topofr_cli.config import load_recipe
from topofr_cli.data.bins import read_pairs_csv
from topofr_cli.data.folder import ImageFolderDataset
from topofr_cli.data.recordio import RecordIODataset
from topofr_cli.engine.trainer import single_identity_note
from topofr_cli.errors import TopofrError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_recipe_integer_over_python_digit_limit_in_file(tmp_path):
    (tmp_path / "big.yaml").write_text("optim:\n  lr: " + "9" * 5000 + "\n")
    one_error(invoke("train", tmp_path / "big.yaml"), "big.yaml: not valid YAML (line 2: an integer of 5000")


def test_recipe_integer_over_python_digit_limit_in_set(tmp_path):
    result = invoke("train", "quickstart", "--set", "optim.lr=" + "9" * 5000, "--print-config")
    one_error(result, "--set optim.lr", "expects a number")
    assert len(result.output) < 1000  # the 5,000 digits are not echoed back


def test_dev_null_is_not_a_recipe():
    one_error(invoke("train", "/dev/null"), "/dev/null: a recipe must be a YAML file, not a device or other")


@pytest.mark.parametrize("where", ["file", "set"])
def test_nul_byte_in_a_recipe_path(tmp_path, where):
    if where == "file":
        (tmp_path / "r.yaml").write_text('train:\n  output: "runs/a\\0b"\n')
        path, overrides = tmp_path / "r.yaml", []
    else:
        path, overrides = None, ['train.output="a\\0b"']
    with pytest.raises(TopofrError, match="key 'train.output' contains a NUL character"):
        load_recipe(path, overrides)


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_pairs_csv_first_row_with_a_bad_flag_is_not_a_header(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(_jpeg(1))
    (tmp_path / "pairs.csv").write_text("a.jpg,b.jpg,maybe\na.jpg,b.jpg,1\n")
    with pytest.raises(TopofrError, match=r"pairs\.csv line 1: issame must be 1/0/true/false, got 'maybe'"):
        read_pairs_csv(tmp_path / "pairs.csv")
    (tmp_path / "pairs.csv").write_text("first,second,issame\na.jpg,b.jpg,1\n")  # a real header
    assert [row[3] for row in read_pairs_csv(tmp_path / "pairs.csv")] == [True]


def test_recordio_idx_with_a_key_listed_twice(tmp_path):
    rec, idx = write_rec(tmp_path, [smooth_jpeg(i) for i in range(3)], [0, 1, 1], header=False)
    lines = idx.read_text().splitlines()
    key, offset = lines[2].split("\t")
    lines[2] = f"{lines[0].split(chr(9))[0]}\t{offset}"  # line 3 repeats line 1's key
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(TopofrError, match=r"\.idx line 3: key \d+ already listed on line 1"):
        RecordIODataset(tmp_path)


def test_image_folder_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg(7))
    root = tmp_path / "faces"
    (root / "ann").mkdir(parents=True)
    (root / "ann" / "0.jpg").write_bytes(_jpeg(1))
    os.symlink(outside, root / "ann" / "1.jpg")
    with pytest.raises(TopofrError, match=r"1\.jpg: a symbolic link to .*secret\.jpg, outside"):
        ImageFolderDataset(root)
    os.unlink(root / "ann" / "1.jpg")
    os.symlink(tmp_path, root / "ben")  # an identity folder that is a link out of the tree
    with pytest.raises(TopofrError, match="outside"):
        ImageFolderDataset(root)
    os.unlink(root / "ben")
    os.symlink(root / "ann" / "0.jpg", root / "ann" / "2.jpg")  # a link inside the folder is fine
    assert len(ImageFolderDataset(root)) == 2


def test_prepare_folder_through_an_outside_symlink_is_one_line(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(_jpeg(7))
    (tmp_path / "faces" / "ann").mkdir(parents=True)
    os.symlink(tmp_path / "secret.jpg", tmp_path / "faces" / "ann" / "x.jpg")
    one_error(invoke("prepare", "folder", tmp_path / "faces", tmp_path / "out"), "x.jpg: a symbolic link")
    assert not (tmp_path / "out").exists()


def test_one_identity_training_gets_a_warning():
    class Data:
        path = "faces"

    assert "1 identity" in single_identity_note(Data(), 1)
    assert single_identity_note(Data(), 2) is None


def test_recordio_idx_number_over_python_digit_limit(tmp_path):
    """Found by the issue-19 fuzz campaign: a 5,000-digit key escaped as int()'s ValueError."""
    rec, idx = write_rec(tmp_path, [smooth_jpeg(i) for i in range(2)], [0, 1], header=False)
    idx.write_text(idx.read_text() + "9" * 5000 + "\t0\n")
    with pytest.raises(TopofrError, match=r"\.idx line 3: number out of range"):
        RecordIODataset(tmp_path)


def test_training_on_one_identity_warns_and_workers_are_clamped(
    tmp_path, make_tiny_dataset, tiny_recipe_file
):
    from topofr_cli.data.workers import usable_cores

    data = make_tiny_dataset(tmp_path / "one", classes=1, per_class=16, pairs=0)
    recipe = tiny_recipe_file(tmp_path, data, tmp_path / "run")
    result = invoke("train", recipe, "--set", "data.num_workers=1000", "--set", "schedule.max_steps=1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "1 identity" in text and "teaches it nothing" in text
    usable = min(2, usable_cores())  # 16 images in batches of 8
    assert f"data.num_workers 1000: using {usable} worker" in text, text
    assert "2 batches per epoch" in text
