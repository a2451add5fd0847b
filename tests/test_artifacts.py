"""artifacts.atomic and artifacts.outputs: files and folders appear whole or not at all; one output policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from topofr_cli import __version__
from topofr_cli.artifacts.atomic import StagedDir, atomic_path, write_json, write_npy, write_text
from topofr_cli.artifacts.outputs import (
    BIN,
    DATASET,
    FILE,
    REPORT,
    RUN,
    OutputPolicy,
    check_output,
    write_marker,
)
from topofr_cli.errors import TopofrError


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "report.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".report.") and tmp.suffix == ".csv"
        assert tmp.exists() and not target.exists()  # created exclusively before the caller writes
        tmp.write_text("a,b\n")
    assert target.read_text() == "a,b\n" and os.listdir(target.parent) == ["report.csv"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "a,b\n" and os.listdir(target.parent) == ["report.csv"]


def test_temporary_names_are_not_predictable(tmp_path):
    names = set()
    for _ in range(3):
        with atomic_path(tmp_path / "x.bin") as tmp:
            names.add(tmp.name)
            tmp.write_bytes(b"1")
    assert len(names) == 3  # a fresh random name each time, not a pid-derived one


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_write_helpers_round_trip(tmp_path):
    write_json(tmp_path / "s.json", {"a": [1, 2]})
    assert (tmp_path / "s.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    write_npy(tmp_path / "e.npy", np.arange(4, dtype=np.float32))
    assert np.array_equal(np.load(tmp_path / "e.npy"), np.arange(4, dtype=np.float32))
    assert sorted(os.listdir(tmp_path)) == ["e.npy", "s.json"]


def test_staged_dir_replaces_whole_or_merges(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "same.txt").write_text("before")
    with StagedDir(out, merge=True) as staging:
        (staging / "same.txt").write_text("after")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"old.txt": "old", "same.txt": "after"}
    with StagedDir(out) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or old copies left beside it


def test_staged_dir_discards_on_error_and_can_refuse_to_replace(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError), StagedDir(out) as staging:
        (staging / "a").write_text("a")
        raise ValueError
    assert os.listdir(tmp_path) == []
    out.mkdir()
    staged = StagedDir(out)
    with pytest.raises(TopofrError, match="out: already exists"):
        staged.commit(replace=False)
    staged.discard()
    assert os.listdir(tmp_path) == ["out"]


def test_output_policies(tmp_path):
    absent, empty, full, a_file = tmp_path / "absent", tmp_path / "empty", tmp_path / "full", tmp_path / "f"
    empty.mkdir()
    full.mkdir()
    (full / "x").write_text("x")
    a_file.write_text("x")
    assert check_output(absent, DATASET) is False
    with pytest.raises(TopofrError, match=r"full: already exists \(pass --overwrite to replace it\)"):
        check_output(full, DATASET)
    with pytest.raises(TopofrError, match="full: exists and was not written by topofr"):
        check_output(full, DATASET, overwrite=True)  # --overwrite replaces only what topofr wrote
    with pytest.raises(TopofrError, match="f: already exists"):
        check_output(a_file, BIN)
    assert check_output(empty, RUN) is False  # an empty run folder counts as absent
    with pytest.raises(TopofrError, match="full: run directory is not empty; pass --resume"):
        check_output(full, RUN)
    with pytest.raises(TopofrError, match="f: train.output exists and is not a directory"):
        check_output(a_file, RUN, overwrite=True)
    with pytest.raises(
        TopofrError, match=r"full: already exists \(results of an earlier run; pass --overwrite"
    ):
        check_output(full, REPORT)  # no names given: any file there is an earlier result
    with pytest.raises(TopofrError, match="full: exists and was not written by topofr"):
        check_output(full, REPORT, overwrite=True)
    write_marker(full, "test")
    assert check_output(full, DATASET, overwrite=True) is True
    assert check_output(full, REPORT, overwrite=True) is True
    assert check_output(full, REPORT, results=["verification.csv"]) is False  # nothing it writes is there
    with pytest.raises(TopofrError, match=r"full/x: already exists"):
        check_output(full, REPORT, results=["verification.csv", "x"])
    assert check_output(empty, REPORT) is False
    with pytest.raises(TopofrError, match="f: --out must be a directory, and this is a file"):
        check_output(a_file, REPORT)
    assert check_output(a_file, FILE) is True


def test_replace_own_recognises_earlier_outputs(tmp_path):
    def is_own(path):
        return json.loads((path / "summary.json").read_text()).get("format") == "mine"

    policy = OutputPolicy(
        "dir",
        "replace_own",
        is_own=is_own,
        refused="{path}: mine, pass --overwrite",
        foreign="{path}: not mine",
    )
    ours, other, empty = tmp_path / "ours", tmp_path / "other", tmp_path / "empty"
    for folder in (ours, other, empty):
        folder.mkdir()
    write_json(ours / "summary.json", {"format": "mine"})
    write_json(other / "summary.json", {"format": "theirs"})
    assert check_output(empty, policy) is True
    with pytest.raises(TopofrError, match="ours: mine, pass --overwrite"):
        check_output(ours, policy)
    assert check_output(ours, policy, overwrite=True) is True
    for overwrite in (False, True):  # --overwrite never deletes a folder the command did not write
        with pytest.raises(TopofrError, match="other: not mine"):
            check_output(other, policy, overwrite=overwrite)


def test_default_outputs_sit_beside_the_run_or_are_named_after_the_model(tmp_path, monkeypatch):
    from topofr_cli.artifacts.outputs import default_output, provenance

    run = tmp_path / "runA"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "step_00000012.pt"
    assert default_output("eval", checkpoint) == run / "eval" / "step_00000012"
    assert default_output("hard-samples", checkpoint) == run / "hard-samples" / "step_00000012"
    assert default_output("analyze-topology", run) == run / "analyze-topology"
    assert default_output("eval", tmp_path / "models" / "r50.onnx") == Path("topofr-eval") / "r50"
    monkeypatch.setattr("sys.argv", ["/usr/bin/topofr", "eval", "a b.pt"])
    assert provenance("a b.pt", step=3, network="mbf", flip=True) == {
        "model": "a b.pt",
        "step": 3,
        "network": "mbf",
        "flip": True,
        "command": "topofr eval 'a b.pt'",
        "topofr_version": __version__,
    }


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/usr/bin/topofr", "eval", "m.pt", "--out", "a b"], "topofr eval m.pt --out 'a b'"),
        (["/x/topofr_cli/__main__.py", "eval", "m.pt"], "python -m topofr_cli eval m.pt"),
    ],
)
def test_the_recorded_command_is_what_the_user_typed(monkeypatch, argv, expected):
    from topofr_cli.artifacts.outputs import command_line

    monkeypatch.setattr("sys.argv", argv)
    assert command_line() == expected
