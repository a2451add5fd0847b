"""The front door: `topofr --help` lists the commands, `--version` prints the package version."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from topofr_cli import __version__
from topofr_cli.cli.app import COMMANDS, app

runner = CliRunner()


def test_help_lists_the_five_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prepare", "train", "eval", "analyze-topology", "hard-samples"):
        assert command in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"topofr {__version__}"


def test_every_command_has_help_text():
    for command in (
        ["prepare", "--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["analyze-topology", "--help"],
        ["hard-samples", "--help"],
        ["export", "--help"],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


HEAVY = ("torch", "numpy", "pandas", "matplotlib", "gudhi", "scipy")


def _modules_after(argv: list[str]) -> tuple[str, list[str]]:
    """Run the CLI in a fresh interpreter; return its stdout and the heavy libraries it imported."""
    code = (
        "import contextlib, io, sys\n"
        "from topofr_cli.cli.app import main\n"
        f"sys.argv = ['topofr', *{argv!r}]\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(out.getvalue()); print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *shown, loaded = done.stdout.rstrip("\n").split("\n")
    return "\n".join(shown), ast.literal_eval(loaded)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_help_and_version_start_without_torch(argv):
    shown, loaded = _modules_after(argv)
    assert loaded == []
    assert "topofr" in shown


def test_root_help_lists_every_command_without_importing_it():
    shown, loaded = _modules_after(["--help"])
    assert loaded == []
    for name in COMMANDS:
        assert name in shown


@pytest.mark.parametrize(
    "command, option",
    [
        ("prepare", "synthetic"),
        ("train", "--print-config"),
        ("eval", "--workers"),
        ("export", "--tolerance"),
        ("analyze-topology", "--json"),
        ("hard-samples", "--json"),
        ("bench", "--device"),
    ],
)
def test_command_help_shows_its_options_without_heavy_imports(command, option):
    shown, loaded = _modules_after([command, "--help"])
    assert option in shown
    assert [name for name in loaded if name != "numpy"] == []


def test_one_line_help_matches_each_command_docstring():
    group = typer.main.get_command(app)
    for name, (_, short_help) in COMMANDS.items():
        command = group.load(name)
        first_paragraph = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        assert first_paragraph == short_help, name


def test_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["trian"])
    assert result.exit_code == 2
    assert "No such command" in result.output


@pytest.mark.parametrize(
    "words, expected",
    [
        ("topofr ha", "hard-samples"),
        ("topofr train --pr", "--print-config"),
        ("topofr eval --wo", "--workers"),
    ],
)
def test_shell_completion_reaches_lazy_commands(words, expected):
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "_TOPOFR_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    code = "import sys; sys.argv = ['topofr']; from topofr_cli.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]


@pytest.mark.parametrize(
    "command, hint",
    [(["prepare", "folder"], True), (["eval"], True), (["hard-samples"], True), (["prepare", "rec"], False)],
)
def test_help_shows_bracketed_text_as_written(command, hint):
    """Rich reads `[detect]` as markup and drops it; help texts escape it, so the install hint is whole."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "pip install 'topofr'" not in result.output
    assert ("pip install 'topofr[detect]'" in result.output) == hint
