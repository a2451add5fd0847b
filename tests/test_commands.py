"""The commands layer: each `topofr` command and its Python call (`topofr_cli.evaluate`, ...) give the
same numbers — the CLI's `--json` object equals the Python result's `to_json()`, up to the output
folder each was told to use, the command line and timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import topofr_cli as tf
from topofr_cli import __version__
from topofr_cli.artifacts.outputs import command_line
from topofr_cli.cli.app import app
from topofr_cli.cli.json_output import plain

runner = CliRunner()
VARYING = {"command", "seconds"}  # the command line and wall-clock times differ between two calls


@pytest.fixture(scope="module")
def run(make_tiny_dataset, tiny_recipe_file, tmp_path_factory):
    """A two-step training run (checkpoints at steps 0 and 2) on a tiny packed set with a .bin."""
    root = tmp_path_factory.mktemp("commands")
    data = make_tiny_dataset(root / "data", classes=4, per_class=4, pairs=20)
    recipe = tiny_recipe_file(root, data, root / "run")
    result = runner.invoke(app, ["train", str(recipe), "--set", "schedule.max_steps=2"])
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "run": root / "run"}


def _comparable(value, outs: dict[str, str]):
    """`value` as JSON, each output folder replaced by a placeholder, varying keys left out."""
    value = plain(value)
    if isinstance(value, dict):
        return {key: _comparable(item, outs) for key, item in value.items() if key not in VARYING}
    if isinstance(value, list):
        return [_comparable(item, outs) for item in value]
    if isinstance(value, str):
        for path, name in outs.items():
            value = value.replace(path, name)
    return value


def _cli_json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    return json.loads(line)


def test_eval_of_a_run_folder_takes_its_latest_checkpoint_in_cli_and_python(run, tmp_path):
    cli = _cli_json(
        ["eval", str(run["run"]), "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "a")]
    )
    python = tf.evaluate(run["run"], device="cpu", workers=0, out=tmp_path / "b", progress=False)
    latest = run["run"] / "checkpoints" / "step_00000002.pt"
    assert cli["model"] == str(latest) and python.model == latest and cli["step"] == 2
    assert (
        cli["command"] == command_line()
    )  # in-process the argv is pytest's; a shell gives `topofr eval ...`
    assert cli["topofr_version"] == python.to_json()["topofr_version"] == __version__
    outs = {str(tmp_path / "a"): "OUT", str(tmp_path / "b"): "OUT"}
    assert _comparable(cli, outs) == _comparable(python.to_json(), outs)
    accuracy = python.verification.results["val"].accuracy_mean
    assert cli["verification"]["sets"]["val"]["accuracy"] == pytest.approx(accuracy, abs=0)


def test_eval_says_which_checkpoint_of_a_run_it_takes(run, tmp_path):
    args = ["eval", str(run["run"]), "--device", "cpu", "--workers", "0", "--out", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    latest = run["run"] / "checkpoints" / "step_00000002.pt"
    assert f"{run['run']}: a run folder; using its latest checkpoint {latest}" in result.output


def test_hard_samples_cli_and_python_agree(run, tmp_path):
    model = run["run"] / "checkpoints" / "step_00000002.pt"
    args = ["--data", str(run["data"]), "--device", "cpu", "--workers", "0", "--top", "5"]
    cli = _cli_json(["hard-samples", str(model), *args, "--out", str(tmp_path / "a")])
    python = tf.hard_samples(
        model, run["data"], device="cpu", workers=0, top=5, out=tmp_path / "b", progress=False
    )
    outs = {str(tmp_path / "a"): "OUT", str(tmp_path / "b"): "OUT"}
    assert _comparable(cli, outs) == _comparable(python.to_json(), outs)
    assert [row["index"] for row in cli["top"]] == python.table.ranking()[:5].tolist()


def test_analyze_topology_cli_and_python_agree(run, tmp_path):
    args = ["--data", str(run["data"]), "--samples", "12", "--dims", "0", "--device", "cpu"]
    cli = _cli_json(["analyze-topology", str(run["run"]), *args, "--out", str(tmp_path / "a")])
    python = tf.analyze_topology(
        run["data"], [run["run"]], samples=12, dims="0", device="cpu", out=tmp_path / "b", progress=False
    )
    outs = {str(tmp_path / "a"): "OUT", str(tmp_path / "b"): "OUT"}
    assert _comparable(cli, outs) == _comparable(python.to_json(), outs)
    written = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert written["sample_indices"] == cli["sample_indices"] == python.summary["sample_indices"]


def _photo_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for identity in ("ann", "bob"):
        (root / identity).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / identity / f"{k}.png")
    return root


def test_prepare_folder_cli_and_python_agree(tmp_path):
    source = _photo_folder(tmp_path / "photos")
    cli = _cli_json(["prepare", "folder", str(source), str(tmp_path / "a")])
    python = tf.prepare_folder(source, tmp_path / "b", progress=False)
    outs = {str(tmp_path / "a"): "OUT", str(tmp_path / "b"): "OUT"}
    assert _comparable(cli, outs) == _comparable(python.to_json(), outs)
    assert cli["num_images"] == 6 and cli["num_classes"] == 2
    shards = sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix != ".json")
    for name in shards:  # the same bytes either way
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_python_calls_load_lazily():
    import subprocess
    import sys

    code = (
        "import sys, topofr_cli as tf; light = 'torch' not in sys.modules; "
        "from topofr_cli.commands.evaluate import evaluate; print(light, tf.evaluate is evaluate)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["True", "True"]  # `import topofr_cli` stays light; the name resolves


def _checks(report: dict) -> list[tuple[str, object]]:
    """The bench's verdicts (not its timings): every correctness check and every step row's status."""
    rows = report["throughput"]["training_steps"]["rows"]
    return [(c["check"], c["ok"]) for c in report["correctness"]["rows"]] + [
        (f"{r['network']} B {r['batch']}", r["status"]) for r in rows
    ]


def test_bench_cli_and_python_agree():
    """`topofr bench --json` and `commands.bench.bench(...)`: the same sections, plan and verdicts (timings differ)."""
    result = runner.invoke(app, ["bench", "--device", "cpu", "--quick", "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    cli = json.loads(result.stdout)
    from topofr_cli.commands.bench import bench

    python = bench("cpu", quick=True)
    assert python.failed == []
    assert set(cli) == set(python.report) and cli["plan"] == plain(python.report["plan"])
    assert _checks(cli) == _checks(json.loads(python.to_json()))
