"""Training as on a cluster: stdout redirected to a file (plain lines, no bar), `train.log` in the run
folder with the same lines, `--resume` on a finished run, the metrics.csv conventions, and a preflight
error said once under torchrun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topofr_cli import __version__
from topofr_cli.artifacts.run_dir import read_metrics
from topofr_cli.cli.app import app

REPO = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # local time, as train.log's lines
STEPS_PER_EPOCH, EPOCHS, LOG_EVERY = 4, 2, 2  # 4 classes × 8 images, batch 8
STEP_LINE = re.compile(
    r"^step (\d+)/8 epoch (\d)/2 loss \d+\.\d{4}( \([^)]*\))? lr \S+ [\d.]+ img/s "
    r"eta \d+:\d\d:\d\d rss \d+\.\d\d GiB$"
)


@pytest.fixture(scope="module")
def finished_run(make_tiny_dataset, tiny_recipe_file, tmp_path_factory):
    """A whole (2-epoch) run of `python -m topofr_cli train` with stdout and stderr sent to files."""
    root = tmp_path_factory.mktemp("logs")
    data = make_tiny_dataset(root / "data", classes=4, per_class=8, pairs=20)
    recipe = tiny_recipe_file(root, data, root / "run")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    with open(root / "stdout.txt", "w") as out, open(root / "stderr.txt", "w") as err:
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "topofr_cli",
                "train",
                str(recipe),
                "--set",
                f"train.log_every={LOG_EVERY}",
            ],
            stdout=out,
            stderr=err,
            env=env,
            cwd=root,
            timeout=600,
        ).returncode
    assert code == 0, (root / "stderr.txt").read_text()
    return root


def test_redirected_stdout_shows_banner_a_line_per_log_step_and_a_summary(finished_run):
    stdout = (finished_run / "stdout.txt").read_text()
    assert "\x1b" not in stdout  # no cursor movement or colour codes in a file
    lines = [untimed(line) for line in stdout.splitlines()]
    assert lines[0] == "train: started (8)"  # the plain renderer says when each bar starts
    lines = lines[1:]
    banner = lines[:5]
    assert banner[0] == f"topofr {__version__}: training {finished_run / 'run'} (a fresh run)"
    assert banner[1] == f"data {finished_run / 'data'}: 32 images, 4 classes"
    assert banner[2].startswith("1 process(es), rank 0 on cpu (") and banner[2].endswith(
        "precision fp32; global batch 8 (8 per process)"
    )
    assert banner[3] == "8 steps (4 per epoch, 2 epochs); a line every 2 steps, a checkpoint every 3"
    assert banner[4] == "recipe, changed from the defaults:"
    changes = dict(line[2:].split(": ", 1) for line in lines[5:] if line.startswith("  "))  # one key a line
    assert changes["data.path"] == str(finished_run / "data") and changes["model.network"] == "mbf"
    assert changes["train.log_every"] == "2" and changes["optim.lr"] == "0.05"
    assert "optim.momentum" not in changes  # left at its default

    steps = [(int(m[1]), int(m[2])) for m in map(STEP_LINE.match, lines) if m]
    assert steps == [(2, 1), (4, 1), (6, 2), (8, 2)], stdout  # a line every log_every steps, epochs 1-based
    verification = [line for line in lines if line.startswith("step ") and "val " in line and "%" in line]
    assert [line.split(":")[0] for line in verification] == ["step 4", "step 8"]  # each epoch end
    summary = [line for line in lines if line.startswith("finished: ")]
    assert len(summary) == 1 and summary[0].startswith("finished: 8 steps in 0:")
    assert (
        "0 non-finite steps skipped, peak rss" in summary[0]
        and "last checkpoint step_00000008.pt" in summary[0]
    )


def untimed(line: str) -> str:
    """The line without the local time that starts every plain stdout line (checked here too)."""
    match = TIMESTAMP.match(line)
    assert match, f"no timestamp: {line!r}"
    return line[match.end() :]


STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def _unstamped(lines: list[str]) -> list[str]:
    return [STAMP.sub("", line, count=1) for line in lines]


def test_every_train_log_line_starts_with_its_local_time(finished_run):
    log = (finished_run / "run" / "train.log").read_text().splitlines()
    stamps = [
        datetime.strptime(STAMP.match(line)[1], "%Y-%m-%d %H:%M:%S") for line in log
    ]  # each line has one
    written = datetime.fromtimestamp((finished_run / "run" / "train.log").stat().st_mtime)
    assert stamps == sorted(stamps)  # in the order the run wrote them
    assert 0 <= (written - stamps[-1]).total_seconds() < 5  # local time: the last line's is the file's


def test_train_log_holds_the_same_lines(finished_run):
    stdout = [untimed(line) for line in (finished_run / "stdout.txt").read_text().splitlines()]
    log = _unstamped((finished_run / "run" / "train.log").read_text().splitlines())
    assert log[0].startswith("topofr ") and log[-1].startswith("finished: 8 steps")
    assert len([line for line in log if STEP_LINE.match(line)]) == 4
    start = stdout.index(log[0])
    assert stdout[start : start + len(log)] == log  # stdout adds only what the command prints after the run


def test_metrics_csv_conventions(finished_run):
    rows = read_metrics(finished_run / "run" / "metrics.csv")
    training = [r for r in rows if r["loss"]]
    verification = [r for r in rows if r["val_val_acc"]]
    assert [int(r["step"]) for r in training] == [2, 4, 6, 8]
    assert [int(r["step"]) for r in verification] == [4, 8]
    for row in rows:  # one convention: the 0-based epoch of the step's batch, (step - 1) // steps per epoch
        assert int(row["epoch"]) == (int(row["step"]) - 1) // STEPS_PER_EPOCH
    assert all(0.0 <= float(r["val_val_acc"]) <= 1.0 for r in verification)  # a fraction, not a percentage


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_on_a_finished_run_says_so_and_changes_nothing(finished_run):
    run = finished_run / "run"
    before = _snapshot(run)
    result = CliRunner().invoke(
        app, ["train", str(finished_run / "recipe.yaml"), "--set", f"train.log_every={LOG_EVERY}", "--resume"]
    )
    assert result.exit_code == 0, result.output
    assert untimed(result.output).replace("\n", " ").strip() == (
        f"{run}: this run is already finished (step 8, 2 of 2 epochs); nothing to resume. Raise "
        "schedule.epochs or schedule.max_steps with --set to train further"
    )
    assert _snapshot(run) == before  # no metrics row, no verification, no log line, no checkpoint


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_a_preflight_error_is_printed_by_rank_0_only(tmp_path, rank, printed):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{path: '{tmp_path / 'missing'}'}}\ntrain: {{output: '{tmp_path / 'run'}'}}\n")
    env = {"RANK": rank, "WORLD_SIZE": "1", "LOCAL_RANK": rank}
    result = CliRunner().invoke(app, ["train", str(recipe)], env=env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == (
        [
            f"error: {tmp_path / 'missing'}: data.path does not exist (and the recipe has no "
            "data.synthetic section to generate it)"
        ]
        if printed
        else []
    )
