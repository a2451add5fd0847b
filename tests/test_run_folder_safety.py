"""One training per run folder (the lock), --overwrite through links, failed starts, stale temporaries."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_train_resume import _assert_same_state
from typer.testing import CliRunner

from topofr_cli.artifacts.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints
from topofr_cli.artifacts.run_lock import LOCK_FILE, RunLock, ensure_unlocked
from topofr_cli.cli.app import app
from topofr_cli.config import load_recipe
from topofr_cli.engine import trainer
from topofr_cli.engine.rng import seed_everything
from topofr_cli.engine.step import TrainStep
from topofr_cli.errors import TopofrError

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(make_tiny_dataset, tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("d") / "data", classes=4, per_class=4, pairs=0)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, result.output.strip()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_held_lock_refuses_a_second_holder_and_is_gone_after_release(tmp_path):
    run = tmp_path / "run"
    lock = RunLock.acquire(run)
    assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    with pytest.raises(TopofrError, match=f"another training \\(process {os.getpid()}\\) is running"):
        RunLock.acquire(run)  # flock: a second open file description conflicts, even in one process
    with pytest.raises(TopofrError, match="another training"):
        ensure_unlocked(run)
    lock.release(remove_empty_root=True)
    assert not run.exists()  # it created the folder and nothing else is in it
    ensure_unlocked(run)
    RunLock.acquire(run).release()


def _train_argv(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "topofr_cli", "train", str(recipe), *extra]


def _wait_for(condition, process: subprocess.Popen, seconds: float = 240.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the training did not get there in time"
        time.sleep(0.01)


def test_second_training_is_refused_and_kill_9_then_resume_is_bit_exact(data, tiny_recipe_file, tmp_path):
    steps = ["--set", "schedule.epochs=3", "--set", "train.save_every=1"]  # 2 steps an epoch: 6 steps
    (tmp_path / "a").mkdir()
    straight = tiny_recipe_file(tmp_path / "a", data, tmp_path / "straight")
    assert runner.invoke(app, ["train", str(straight), *steps]).exit_code == 0

    (tmp_path / "b").mkdir()
    recipe = tiny_recipe_file(tmp_path / "b", data, tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        _train_argv(recipe, *steps), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(lambda: (tmp_path / "run/checkpoints/step_00000001.pt").exists(), first)
        os.kill(first.pid, signal.SIGSTOP)  # frozen mid-run, lock held: it cannot finish under our checks
        before = snapshot(tmp_path / "run")
        for extra in ([], ["--resume"], ["--overwrite"]):
            code, out = invoke(str(recipe), *steps, *extra)
            assert code == 2 and len(out.splitlines()) == 1, out
            assert (
                f"another training (process {first.pid}) is running" in out and str(tmp_path / "run") in out
            )
        assert snapshot(tmp_path / "run") == before
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = latest_checkpoint(tmp_path / "run")
    assert (tmp_path / "run" / LOCK_FILE).exists()  # kill -9 leaves the file; the kernel dropped the lock

    code, out = invoke(str(recipe), *steps, "--resume")
    assert code == 0, out
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    resumed = Checkpoint.read(latest_checkpoint(tmp_path / "run"))
    assert resumed.step == 6 and int(killed_at.stem.split("_")[1]) < 6
    _assert_same_state(Checkpoint.read(latest_checkpoint(tmp_path / "straight")), resumed)


def test_overwrite_never_deletes_through_a_symlinked_run_folder(data, tiny_recipe_file, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    link = tmp_path / "run"
    link.symlink_to(target)
    recipe = tiny_recipe_file(tmp_path, data, link)
    code, out = invoke(str(recipe), "--overwrite")
    assert code == 2 and len(out.splitlines()) == 1
    assert "symbolic link" in out and str(target) in out
    assert snapshot(target) == {"precious.txt": b"keep me"} and link.is_symlink()

    target.rename(tmp_path / "moved")  # now the link dangles
    code, out = invoke(str(recipe))
    assert code == 2 and "symbolic link" in out and "does not exist" in out
    assert not target.exists()


def test_overwrite_empties_a_folder_but_not_what_its_links_point_to(data, tiny_recipe_file, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("old")
    (run / "linked").symlink_to(outside)
    recipe = tiny_recipe_file(tmp_path, data, run)
    code, out = invoke(str(recipe), "--overwrite", "--set", "schedule.max_steps=1")
    assert code == 0, out
    assert not (run / "old.txt").exists() and not (run / "linked").exists()
    assert snapshot(outside) == {"data.txt": b"keep me"}


@pytest.mark.parametrize("existed", [False, True])
def test_a_start_failing_at_its_first_batch_leaves_nothing_to_block_a_rerun(
    data, tiny_recipe_file, tmp_path, monkeypatch, existed
):
    run = tmp_path / "run"
    if existed:
        run.mkdir()
    recipe = tiny_recipe_file(tmp_path, data, run)

    def fail(*args, **kwargs):
        raise TopofrError("the first batch failed")

    monkeypatch.setattr(TrainStep, "__call__", fail)
    code, out = invoke(str(recipe))
    assert code == 2 and out.splitlines()[-1] == "error: the first batch failed"
    assert (sorted(run.iterdir()) == []) if existed else not run.exists()
    monkeypatch.undo()
    code, out = invoke(str(recipe), "--set", "schedule.max_steps=1")  # a plain rerun is accepted
    assert code == 0, out
    assert [s for s, _ in list_checkpoints(run)] == [0, 1]


def test_stale_temporaries_are_removed_at_the_next_start_and_only_under_the_lock(
    data, tiny_recipe_file, tmp_path
):
    run = tmp_path / "run"
    recipe = tiny_recipe_file(tmp_path, data, run)
    assert invoke(str(recipe), "--set", "schedule.max_steps=1")[0] == 0
    stale = [
        run / "checkpoints/.step_00000002.0123456789ab.tmp.pt",
        run / ".recipe.a1b2c3d4e5f6.tmp.yaml",
        run / "checkpoints/.step_00000002.pt.tmp-4242",
    ]  # the last: the naming before atomic.py
    kept = [run / "notes.txt", run / "checkpoints/.keep"]
    for path in stale + kept:
        path.write_bytes(b"x")

    held = RunLock.acquire(run)  # a live writer: its temporaries must survive a refused start
    code, out = invoke(str(recipe), "--resume", "--set", "schedule.max_steps=2")
    assert code == 2 and "another training" in out
    assert all(path.exists() for path in stale)
    held.release()

    code, out = invoke(str(recipe), "--resume", "--set", "schedule.max_steps=2")
    assert code == 0, out
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def test_deterministic_training_seeds_python_and_numpy(data, tiny_recipe_file, tmp_path):
    recipe = load_recipe(tiny_recipe_file(tmp_path, data, tmp_path / "one"), ["schedule.max_steps=1"])
    draws = []
    for index, noise in enumerate([123, 456]):
        random.seed(noise)
        np.random.seed(noise)
        recipe.train.output = str(tmp_path / f"run{index}")
        trainer.train(recipe, progress=False)
        draws.append((random.random(), float(np.random.random())))
    assert draws[0] == draws[1]  # whatever the state before, training left both where its seed put them
    seed_everything(7)
    assert (random.random(), np.random.random()) == (
        random.Random(7).random(),
        np.random.RandomState(7).random_sample(),
    )
