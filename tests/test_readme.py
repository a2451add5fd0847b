"""The README's Python example runs as written (a user copies it into a notebook)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "loss_topo" in printed and "loss_cls" in printed


def test_readme_option_list_matches_every_commands_help():
    """Each shared option the README lists is on exactly the commands it names (both directions)."""
    from typer.testing import CliRunner

    from topofr_cli.cli.app import app

    listed = dict(
        re.findall(r"^- `(--[a-z-]+)[^`]*`[^:]*: ([a-z, -]+)", README.read_text(encoding="utf-8"), re.M)
    )
    assert set(listed) == {"--device", "--workers", "--out", "--overwrite", "--figure-format", "--json"}
    commands = [
        "prepare folder", "prepare rec", "prepare bin", "prepare synthetic", "train", "export", "eval",
        "analyze-topology", "hard-samples", "bench", "cluster",
    ]  # fmt: skip
    runner = CliRunner()
    helps = {c: runner.invoke(app, [*c.split(), "--help"], env={"COLUMNS": "300"}).output for c in commands}
    for option, names in listed.items():
        named = {name.strip() for name in names.split(",")}
        having = {c for c, text in helps.items() if re.search(rf"{option}\b(?!-)", text)}
        assert having == named, (option, sorted(having ^ named))
