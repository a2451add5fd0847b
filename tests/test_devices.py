"""One device resolver for every command and the recipe: auto, cpu, cuda, cuda:N."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from topofr_cli.cli.app import app
from topofr_cli.config import recipe_from_dict
from topofr_cli.devices import is_device_name, resolve_device
from topofr_cli.errors import TopofrError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


@pytest.mark.parametrize("text", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_accepted_names(text):
    assert is_device_name(text)


@pytest.mark.parametrize("text", ["gpu", "CPU", "cuda:", "cuda:x", "mps", "cuda:0 ", ""])
def test_other_names_are_refused_naming_the_option(text):
    assert not is_device_name(text)
    with pytest.raises(TopofrError, match=r"^--gpu-opt .*: expected auto, cpu, cuda or cuda:N$"):
        resolve_device(text, option="--gpu-opt")


def test_cpu_is_the_cpu_and_auto_follows_the_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected


@no_cuda
@pytest.mark.parametrize("text", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_clear_line(text):
    with pytest.raises(TopofrError, match=rf"^train.device {text}: no CUDA device is available$"):
        resolve_device(text, option="train.device")


def test_the_recipe_takes_the_same_names():
    assert recipe_from_dict({"train": {"device": "cuda:1"}}).train.device == "cuda:1"
    with pytest.raises(
        TopofrError, match="key 'train.device' must be one of auto, cpu, cuda or cuda:N, got 'gpu'"
    ):
        recipe_from_dict({"train": {"device": "gpu"}}, source="r.yaml")


@no_cuda
@pytest.mark.parametrize(
    "command",
    [["eval", "m.pt"], ["hard-samples", "m.pt", "--data", "d"], ["analyze-topology", "m.pt", "--data", "d"]],
)
def test_every_command_refuses_cuda_n_on_a_machine_without_cuda(command, tmp_path):
    result = CliRunner().invoke(app, [*command, "--device", "cuda:1"])
    assert result.exit_code == 2
    assert "--device cuda:1: no CUDA device is available" in result.output
