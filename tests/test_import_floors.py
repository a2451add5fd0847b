"""The import floors of `topofr_cli/` (docs/interfaces.md, "Floors"): read from the source's AST, no
module imports a folder on a higher floor or another folder of its own floor, and no folders import
each other in a circle. Lazy imports inside functions count: they run too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "topofr_cli"


def declared_floors() -> list[list[str]]:
    """The floors, lowest first, from the fenced `floors` block of docs/interfaces.md."""
    text = (ROOT / "docs" / "interfaces.md").read_text()
    block = re.search(r"```text floors\n(.*?)```", text, re.S)
    assert block, "docs/interfaces.md lost its ```text floors block"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    return [line.split() for line in reversed(lines) if line]  # the block is written top floor first


def unit_of(path: Path) -> str:
    """The folder (or top-level module) a file of the package belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "topofr_cli" if parts == ("__init__",) else parts[0]


def imported_units(path: Path) -> set[tuple[str, int]]:
    """(unit, line) of every `topofr_cli` import in `path`, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (write topofr_cli.x)"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "topofr_cli":
                found.add((parts[1] if len(parts) > 1 else "topofr_cli", node.lineno))
    return found


def import_edges() -> dict[str, set[tuple[str, str]]]:
    """unit -> {(imported unit, "file:line")} over the whole package, imports within a unit left out."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        for target, line in imported_units(path):
            if target != unit:
                edges.setdefault(unit, set()).add((target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_folder_has_a_floor():
    floors = declared_floors()
    placed = [unit for floor in floors for unit in floor]
    assert len(placed) == len(set(placed)), "a folder is on two floors"
    units = {unit_of(path) for path in PACKAGE.rglob("*.py")} - {"topofr_cli"}
    assert units - set(placed) == set(), "place these folders on a floor in docs/interfaces.md"


def test_no_import_climbs_or_crosses_a_floor():
    level = {unit: n for n, floor in enumerate(declared_floors()) for unit in floor}
    level["topofr_cli"] = -1  # the package itself: its version and lazy names, importable from anywhere
    wrong = sorted(
        f"{where}: {unit} (floor {level[unit]}) imports {target} (floor {level[target]})"
        for unit, targets in import_edges().items()
        for target, where in targets
        if target in level and unit in level and level[target] >= level[unit] and unit != "topofr_cli"
    )
    assert wrong == []


def test_no_folders_import_each_other_in_a_circle():
    graph = {unit: {target for target, _ in targets} for unit, targets in import_edges().items()}
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for target in sorted(graph.get(unit, ())):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])


def test_the_guard_sees_a_climbing_import(tmp_path):
    """The AST reader finds imports in functions and under TYPE_CHECKING, which the guard relies on."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from topofr_cli.cli.common import console\n"
        "def f():\n    import topofr_cli.plots.roc\n    from topofr_cli import __version__\n"
    )
    assert imported_units(source) == {("cli", 3), ("plots", 5), ("topofr_cli", 6)}
