"""The ablation's arms (benchmarks/ablation.py) switch off exactly the mechanism they name."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from topofr_cli.config import load_recipe
from topofr_cli.engine.objective import build_objective
from topofr_cli.engine.topofr_objective import TopoFRObjective
from topofr_cli.models.partial_fc import ClassifierOutput
from topofr_cli.recipes import PACKAGED_DIR
from topofr_cli.topology.ptsa import ptsa_loss

ROOT = Path(__file__).resolve().parents[1]
ONE_PROCESS = SimpleNamespace(world_size=1, device=torch.device("cpu"))


def ablation_module():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arm_recipe(arm: str):
    ablation = ablation_module()
    overrides = ablation.run_overrides(arm, 1, Path("run"), Path("data"))
    return load_recipe(PACKAGED_DIR / "quickstart.yaml", overrides)


@pytest.mark.parametrize(
    ("arm", "mechanisms"),
    [
        ("plain", None),
        ("ptsa", (True, False, False)),
        ("ptsa_rsp", (True, True, False)),
        ("topofr", (True, True, True)),
    ],
)
def test_each_arm_enables_the_mechanisms_it_names(arm, mechanisms):
    recipe = arm_recipe(arm)
    assert recipe.train.seed == 1 and recipe.data.synthetic is None
    if mechanisms is None:
        assert not recipe.topofr.enabled
        return
    topofr = recipe.topofr
    assert topofr.enabled and (topofr.ptsa.enabled, topofr.rsp.enabled, topofr.sde.enabled) == mechanisms
    assert (topofr.compat, topofr.ptsa.alpha, topofr.rsp.prob) == ("fixed", 0.1, 0.2)


def test_arms_differ_only_in_the_topofr_section():
    recipes = [arm_recipe(arm).to_dict() for arm in ("plain", "ptsa", "ptsa_rsp", "topofr")]
    for recipe in recipes[1:]:
        assert {k: v for k, v in recipe.items() if k != "topofr"} == {
            k: v for k, v in recipes[0].items() if k != "topofr"
        }


def test_without_rsp_the_backbone_sees_the_clean_batch():
    objective = build_objective(arm_recipe("ptsa"), ONE_PROCESS)
    assert isinstance(objective, TopoFRObjective)
    x = torch.rand(8, 3, 112, 112) * 2 - 1
    backbone_input, input_space = objective.perturb(x, torch.Generator().manual_seed(0))
    assert backbone_input is x and input_space is x
    rsp_objective = build_objective(arm_recipe("ptsa_rsp"), ONE_PROCESS)
    rsp_input, rsp_space = rsp_objective.perturb(x, torch.Generator().manual_seed(0))
    assert rsp_space is x and rsp_input.shape == x.shape


def test_without_sde_the_classification_loss_is_the_plain_mean():
    torch.manual_seed(0)
    batch = 10
    ce = torch.rand(batch) * 5
    output = ClassifierOutput(
        ce=ce, p_true=torch.rand(batch), entropy=torch.rand(batch) * 3, labels=torch.arange(batch)
    )
    x = torch.rand(batch, 3, 8, 8) * 2 - 1
    z = torch.randn(batch, 16)
    objective = build_objective(arm_recipe("ptsa_rsp"), ONE_PROCESS)
    loss, terms = objective(x_topology=x, embeddings=z, output=output, step=0)
    expected_topo = ptsa_loss(x, z, "official", 1.0)  # λ starts at 1
    torch.testing.assert_close(loss, ce.mean() + 0.1 * expected_topo)
    assert "gum_pi" not in terms and "sds_mean" not in terms
    with_sde, sde_terms = build_objective(arm_recipe("topofr"), ONE_PROCESS)(
        x_topology=x, embeddings=z, output=output, step=0
    )
    assert "gum_pi" in sde_terms and not torch.allclose(with_sde, loss)


def test_the_table_is_computed_from_the_committed_run_files(tmp_path, monkeypatch):
    """Per-run JSONs (as --collect writes them) give the table's mean ± sample std, and --write-doc puts
    it between the markers of the results page with the commits, CPUs and torch versions it came from."""
    import json

    ablation = ablation_module()
    for seed, (accuracy, w1) in enumerate([(0.60, 1.0), (0.64, 2.0)]):
        curves = [
            {"arm": "topofr", "seed": seed, "step": step, "space": "latent_l2", "sample": "train", "dim": 0}
            | {"wasserstein_1": w1 * step / 40}
            for step in (0, 40)
        ]
        run = {
            "arm": "topofr",
            "seed": seed,
            "accuracy": accuracy,
            "pixel_baseline": 0.585,
            "total_cpu_s": 100.0,
        }
        run.update(commit="abc1234", cpu="Some CPU", torch="2.13.0", curves=curves)
        (tmp_path / f"topofr_seed{seed}.json").write_text(json.dumps(run))
    results, curves = ablation.load_committed(["topofr"], tmp_path)
    table = ablation.report_table(results, curves, ["topofr"])
    row = table.splitlines()[2].split(" | ")
    assert row[1:4] == [
        "2",
        "62.00 ± 2.83",
        "1.5 ± 0.7",
    ]  # acc: mean 62, sample std 2.83; W1 at the last step
    doc = tmp_path / "results.md"
    start, end = ablation.TABLE_MARKER
    doc.write_text(f"before\n{start}\nold table\n{end}\nafter\n")
    monkeypatch.setattr(ablation, "RESULTS_DOC", doc)
    ablation.write_doc(table, results)
    text = doc.read_text()
    assert (
        "old table" not in text and table in text and text.startswith("before\n") and text.endswith("after\n")
    )
    assert "commit abc1234; CPU Some CPU; torch 2.13.0" in text
