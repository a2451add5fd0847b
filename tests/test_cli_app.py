"""The front door: `topofr --help` lists the commands, `--version` prints the package version."""

from typer.testing import CliRunner

from topofr_cli import __version__
from topofr_cli.cli.app import app

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
    for command in (["prepare", "--help"], ["train", "--help"], ["eval", "--help"],
                    ["analyze-topology", "--help"], ["hard-samples", "--help"], ["export", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output
