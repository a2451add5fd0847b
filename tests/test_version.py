"""One version, written once (`topofr_cli.__version__`), read by the build and stamped on every output."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import torch
from setuptools.config.pyprojecttoml import read_configuration

from topofr_cli import __version__
from topofr_cli.artifacts.checkpoint import Checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_reads_the_package_version():
    """pyproject declares the version dynamic; setuptools resolves it to the package's own string."""
    raw = read_configuration(ROOT / "pyproject.toml", expand=False)
    assert "version" in raw["project"]["dynamic"] and "version" not in raw["project"]
    assert raw["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "topofr_cli.__version__"}
    # setuptools' own resolution of that attr, as `pip install` does it
    assert read_configuration(ROOT / "pyproject.toml", expand=True)["project"]["version"] == __version__


def test_the_changelog_top_release_is_the_package_version():
    releases = re.findall(r"^## (\d+\.\d+\.\d+) — (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases[0][0] == __version__
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) for _, date in releases), releases


def test_cli_version_is_the_package_version():
    done = subprocess.run([sys.executable, "-m", "topofr_cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"topofr {__version__}"


def test_checkpoints_carry_the_running_version(tmp_path):
    ckpt = Checkpoint(
        network="mbf",
        embedding_size=8,
        num_classes=3,
        backbone={"w": torch.zeros(2)},
        classifier=torch.zeros(3, 8),
    )
    path = ckpt.write(tmp_path / "c.pt")
    assert torch.load(path, weights_only=True)["topofr_version"] == __version__


def test_every_written_topofr_version_is_the_package_version():
    """Each place that writes a `topofr_version` key (summaries, CSV/JSON provenance, packed meta,
    checkpoints) takes the value from `__version__`, never a literal: a literal is how files said 0.1.0."""
    writers = []
    for path in (ROOT / "topofr_cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                pairs = [(k, v) for k, v in zip(node.keys, node.values, strict=True) if k is not None]
                for key, value in pairs:
                    if isinstance(key, ast.Constant) and key.value == "topofr_version":
                        writers.append((path.name, ast.unparse(value)))
            elif isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "topofr_version":
                writers.append((path.name, ast.unparse(node.value)))
    assert len(writers) >= 4, writers  # provenance, analysis summary, packed meta, checkpoint
    # the checkpoint's field defaults to __version__; eval's JSON repeats its provenance's (__version__)
    allowed = {"__version__", "self.topofr_version", "self.provenance['topofr_version']"}
    assert all(value in allowed for _, value in writers), writers
