"""The progress interface: the core reports, the caller renders (rich in the CLI, tqdm for Python)."""

from __future__ import annotations

import ast
import io
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

import topofr_cli
from topofr_cli.cli.render import RichProgress, bars
from topofr_cli.progress import SILENT, TqdmProgress, resolve_progress, stage, track

CORE = ("data", "engine", "evaluation", "analysis", "hardness")


class Recorder:
    """A Progress that writes down every call, to check what the core reports."""

    def __init__(self):
        self.events = []

    def start(self, description, total=None, *, completed=0, transient=False):
        self.events.append(("start", description, total, transient))
        recorder = self

        class Task:
            def advance(self, n=1):
                recorder.events.append(("advance", description, n))

            def status(self, text):
                recorder.events.append(("status", description, text))

            def close(self):
                recorder.events.append(("close", description))

        return Task()

    def message(self, level, text):
        self.events.append(("message", level, text))


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_core_module_imports_a_progress_bar_package():
    root = Path(topofr_cli.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for folder in CORE
        for p in sorted((root / folder).rglob("*.py"))
        if _imported_modules(p) & {"rich", "tqdm"}
    ]
    assert offenders == []


def test_data_imports_nothing_above_it():
    root = Path(topofr_cli.__file__).parent
    upward = {"topofr_cli.evaluation", "topofr_cli.engine", "topofr_cli.analysis", "topofr_cli.hardness"}
    for path in sorted((root / "data").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in modules if any(m.startswith(u) for u in upward)}, path


def test_resolve_progress_choices():
    assert resolve_progress(False) is SILENT
    assert isinstance(resolve_progress(None), TqdmProgress) and isinstance(
        resolve_progress(True), TqdmProgress
    )
    recorder = Recorder()
    assert resolve_progress(recorder) is recorder


def test_track_advances_once_per_item_and_closes_when_the_loop_stops_early():
    recorder = Recorder()
    for item in track(recorder, [10, 20, 30], "items", 3):
        if item == 20:
            break
    assert recorder.events == [("start", "items", 3, False), ("advance", "items", 1), ("close", "items")]


def test_stage_closes_even_when_the_block_fails():
    recorder = Recorder()
    with pytest.raises(ValueError), stage(recorder, "persistence", transient=True):
        raise ValueError("boom")
    assert recorder.events == [("start", "persistence", None, True), ("close", "persistence")]


def test_core_function_reports_through_the_given_progress(tmp_path):
    from topofr_cli.data import open_dataset
    from topofr_cli.data.packed import pack_dataset
    from topofr_cli.data.synthetic import generate_synthetic

    source = generate_synthetic(
        tmp_path / "a",
        identities=2,
        images_per_identity=2,
        heldout_identities=2,
        pairs=20,
        seed=1,
        progress=False,
    )
    recorder = Recorder()
    pack_dataset(open_dataset(source.out_dir), tmp_path / "b", source="test", progress=recorder)
    assert recorder.events[0] == ("start", "packing", 4, False)
    assert [e for e in recorder.events if e[0] == "advance"] == [("advance", "packing", 1)] * 4
    assert recorder.events[-1] == ("close", "packing")


def test_tqdm_bars_go_to_stderr_and_messages_to_stdout(capsys):
    progress = TqdmProgress()
    task = progress.start("work", 4)
    task.advance(4)
    task.close()
    progress.message("note", "look here")
    captured = capsys.readouterr()
    assert "work" in captured.err and "4/4" in captured.err
    assert captured.out == "note: look here\n"


def test_rich_renderer_keeps_finished_bars_and_drops_transient_ones():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=100, force_terminal=False))
    kept = progress.start("decoding", 3)
    kept.advance(3)
    kept.status("fast")
    kept.close()
    gone = progress.start("scratch step", 2, transient=True)
    gone.advance()
    gone.close()
    progress.message("note", "RNG streams [differ]")
    progress.message("info", "step 4: val 51.00%")
    text = out.getvalue()
    assert "decoding" in text and "3/3" in text and "fast" in text
    assert "scratch step" not in text
    assert "note: RNG streams [differ]" in text and "step 4: val 51.00%" in text
    assert bars(Console(file=io.StringIO()), enabled=False) is SILENT


def test_plain_renderer_writes_lines_a_log_file_can_keep():
    from topofr_cli.cli.render import PlainProgress, for_console

    buffer = io.StringIO()
    console = Console(file=buffer, width=60, force_terminal=False)
    progress = for_console(console)
    assert isinstance(progress, PlainProgress)  # not a terminal: no live bar
    task = progress.start("embed", 3)
    task.advance(2)
    task.status("ignored: a status changes too often for a log")
    task.advance()
    progress.message("log", "step 10/100 epoch 1/2 loss 3.2100 " + "x" * 60)  # longer than the width
    progress.message("note", "a [bold]note[/]")
    progress.start("sub-step", 5, transient=True).close()
    task.close()
    task.close()
    timed = buffer.getvalue().splitlines()
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")  # every line starts with the local time
    assert all(stamp.match(line) for line in timed), timed
    now = time.time()
    for line in timed:
        logged = time.mktime(time.strptime(stamp.match(line)[1], "%Y-%m-%d %H:%M:%S"))
        assert now - 5 <= logged <= now + 1
    lines = [stamp.sub("", line) for line in timed]
    assert lines[0] == "embed: started (3)"  # a start line per (non-transient) bar
    assert lines[1] == "step 10/100 epoch 1/2 loss 3.2100 " + "x" * 60  # one line, not wrapped
    assert lines[2] == "note: a [bold]note[/]"  # printed as given: no markup, no colour codes
    assert len(lines) == 4 and lines[3].startswith("embed: 3/3 done in ")
    assert "\x1b" not in buffer.getvalue()


def test_plain_renderer_says_where_a_bar_stands_after_a_quiet_spell(monkeypatch):
    """Under nohup/SLURM a long stage is not minutes of silence: after `quiet_seconds` without a line,
    the next advance prints the count."""
    from topofr_cli.cli import render

    clock = [100.0]
    monkeypatch.setattr(render.time, "perf_counter", lambda: clock[0])
    buffer = io.StringIO()
    progress = render.PlainProgress(Console(file=buffer, width=200, force_terminal=False), quiet_seconds=30)
    task = progress.start("synthetic faces", 1000)
    clock[0] += 10
    task.advance(100)  # 10 s of quiet: nothing yet
    clock[0] += 25
    task.advance(100)  # 35 s: a line
    clock[0] += 5
    task.advance(100)  # 5 s after that line: nothing
    clock[0] += 31
    task.advance(50)
    task.close()
    lines = [line[20:] for line in buffer.getvalue().splitlines()]
    assert lines == [
        "synthetic faces: started (1,000)",
        "synthetic faces: 200/1,000 after 35 s",
        "synthetic faces: 350/1,000 after 71 s",
        "synthetic faces: 350/1,000 done in 71 s",
    ]


def test_rich_renderer_leaves_periodic_lines_to_its_bar():
    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, width=80, force_terminal=True))
    progress.message("log", "step 10/100")
    progress.message("info", "step 10: lfw 99.00%")
    assert "step 10/100" not in buffer.getvalue() and "lfw 99.00%" in buffer.getvalue()
