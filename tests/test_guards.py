"""Whole-tree guards, read from the AST of every module of the package:
- presentation stays at the edge: `rich` and `tqdm` are imported only in `cli/` and `progress.py`;
- files topofr defines are written and read in `artifacts/` only: no `torch.save` / `torch.load`,
  no `os.replace` / `os.rename`, no `tempfile` anywhere else.
Each detector is also run on a small snippet that breaks its rule, so a guard that finds nothing
because it cannot see is a failing test, not a passing one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import topofr_cli

ROOT = Path(topofr_cli.__file__).parent
PRESENTATION = {"rich", "tqdm"}
FILE_CALLS = {("torch", "save"), ("torch", "load"), ("os", "replace"), ("os", "rename")}


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _where(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def presentation_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PRESENTATION]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PRESENTATION:
            found.append(node.module)
    return found


def file_operations(source: str) -> list[str]:
    """`torch.save(...)`-style uses, `from torch import save`-style imports, and any use of tempfile."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FILE_CALLS:
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in {"torch", "os"}:
            found += [f"{node.module}.{a.name}" for a in node.names if (node.module, a.name) in FILE_CALLS]
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "tempfile"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tempfile":
            found.append(node.module)
    return found


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import rich.table", ["rich.table"]),
        ("from tqdm.auto import tqdm", ["tqdm.auto"]),
        ("import torch\ntorch.save({}, 'x')", ["torch.save"]),
        ("from torch import load", ["torch.load"]),
        ("import os\nos.replace('a', 'b')", ["os.replace"]),
        ("from tempfile import mkstemp", ["tempfile"]),
        ("import json, tempfile", ["tempfile"]),
    ],
)
def test_the_detectors_see_what_they_guard(snippet, expected):
    assert presentation_imports(snippet) + file_operations(snippet) == expected


def test_rich_and_tqdm_only_in_cli_and_progress():
    offenders = {
        _where(p): found
        for p in _modules()
        if not _where(p).startswith("cli/") and _where(p) != "progress.py"
        if (found := presentation_imports(p.read_text()))
    }
    assert offenders == {}


def test_files_are_saved_loaded_renamed_and_staged_in_artifacts_only():
    offenders = {
        _where(p): found
        for p in _modules()
        if not _where(p).startswith("artifacts/")
        if (found := file_operations(p.read_text()))
    }
    assert offenders == {}
