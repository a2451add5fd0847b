"""OS errors while writing (issue 19, class 9): one line naming the path, exit 2, nothing staged left.

The file-size limit (RLIMIT_FSIZE) is set in a child process: a write past it fails with EFBIG, as
a full disk fails with ENOSPC, and neither carries a file name of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

_LIMITED = r"""
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = sys.argv[2:]
{body}
"""

_CLI = "from topofr_cli.cli.app import main\nmain()"


def run_limited(limit: int, body: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _LIMITED.format(body=body), str(limit), "topofr", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"},
    )


def one_line(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    text = done.stdout + done.stderr
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def test_prepare_folder_past_a_file_size_limit(tmp_path):
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    for person in ("alice", "bob"):
        (photos / person).mkdir(parents=True)
        for i in range(3):
            noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # ~12 KB as PNG
            Image.fromarray(noise).save(photos / person / f"{i}.png")
    out = tmp_path / "packed"
    done = run_limited(20_000, _CLI, "prepare", "folder", str(photos), str(out))
    one_line(done, str(out), "cannot write (File too large)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no packed/, no .packed.*.staging/


def test_checkpoint_write_past_a_file_size_limit(tmp_path):
    """torch.save fails inside its zip writer with a RuntimeError; the write says so in one line."""
    body = (
        "from topofr_cli.artifacts.checkpoint import Checkpoint\n"
        "from topofr_cli.errors import TopofrError\n"
        "import torch\n"
        "ckpt = Checkpoint(network='mbf', embedding_size=8, num_classes=2, backbone={'w': torch.zeros(100_000)}, classifier=None, step=1)\n"
        "try:\n"
        "    ckpt.write(sys.argv[1])\n"
        "except TopofrError as exc:\n"
        "    print(f'error: {exc}')\n"
        "    sys.exit(2)\n"
    )
    target = tmp_path / "run" / "step_00000001.pt"
    done = run_limited(50_000, body, str(target))
    one_line(done, str(target), "cannot write")
    assert list((tmp_path / "run").iterdir()) == []  # the temporary sibling is gone


def test_a_staged_folder_whose_writer_fails_is_removed_and_the_error_kept(tmp_path):
    from topofr_cli.artifacts.atomic import StagedDir

    class Full(OSError):
        pass

    try:
        with StagedDir(tmp_path / "out") as staging:
            (staging / "part").write_text("x")
            raise Full(28, "No space left on device")
    except Full as exc:
        assert exc.errno == 28
    assert list(tmp_path.iterdir()) == []
