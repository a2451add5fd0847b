"""`topofr train RECIPE`: train (or resume) a face recognition model from a YAML recipe."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from topofr_cli.cli.common import console, user_errors
from topofr_cli.cli.render import for_console
from topofr_cli.errors import TopofrError


def _summary(result, pixel_baselines: dict[str, float]) -> Table:
    table = Table(title=f"Verification after {result.steps} steps (10-fold accuracy, %)")
    table.add_column("set")
    table.add_column("model", justify="right")
    table.add_column("raw-pixel baseline", justify="right")
    for score in result.verification:
        baseline = pixel_baselines.get(score.name)
        table.add_row(
            score.name,
            f"{100 * score.accuracy:.2f} ± {100 * score.accuracy_std:.2f}",
            "-" if baseline is None else f"{100 * baseline:.2f}",
        )
    return table


@user_errors
def train(
    recipe: str | None = typer.Argument(
        None,
        help="YAML recipe file, or the name of a packaged recipe (quickstart, quickstart_topofr, "
        "ms1mv2_r50, ... glint360k_r200, finetune_quickstart, finetune).",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe key, e.g. --set optim.lr=0.05 (repeatable)."
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Start from this trained model's backbone (topofr checkpoint, reference model.pt, insightface "
        ".pth, state dict) with a new classifier: shorthand for --set train.init=MODEL.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the run directory's latest checkpoint."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing non-empty run directory (train.output)."
    ),
    nproc_per_node: int = typer.Option(
        1, "--nproc-per-node", help="Processes on this machine; > 1 launches through torchrun."
    ),
    nnodes: int = typer.Option(1, "--nnodes", help="Machines taking part (multi-node via torchrun)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This machine's index among --nnodes."),
    rdzv_endpoint: str | None = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT of the rendezvous (required when --nnodes > 1)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda or cuda:N: shorthand for --set train.device=DEVICE."
    ),
    print_config: bool = typer.Option(
        False,
        "--print-config",
        help="Print the resolved recipe (file, defaults and --set) as YAML and exit; "
        "without RECIPE, the defaults.",
    ),
) -> None:
    """Train a model from RECIPE; prints verification accuracy next to the raw-pixel baseline."""
    from topofr_cli.config import load_recipe
    from topofr_cli.engine.distributed import launched_by_torchrun
    from topofr_cli.engine.init_weights import plan_init
    from topofr_cli.engine.launch import LaunchSpec, launch
    from topofr_cli.engine.preflight import plan_run
    from topofr_cli.recipes import packaged_recipes, resolve_recipe

    if recipe is None and not print_config:
        raise TopofrError(
            f"name a RECIPE: a YAML file or a packaged recipe ({', '.join(packaged_recipes())})"
        )
    recipe_path = resolve_recipe(recipe) if recipe is not None else None
    if device is not None:
        overrides = [*overrides, f"train.device={device}"]
    if init is not None:  # fine-tuning; JSON quoting keeps any path a YAML string
        overrides = [*overrides, f"train.init={json.dumps(init)}"]
    loaded = load_recipe(recipe_path, overrides)
    if print_config:
        import yaml

        typer.echo(yaml.safe_dump(loaded.to_dict(), sort_keys=False), nl=False)
        return
    spec = LaunchSpec(nproc_per_node, nnodes, node_rank, rdzv_endpoint)
    if spec.needs_launcher and not launched_by_torchrun():
        spec.validate()
        loaded = plan_init(loaded, resume=resume).recipe  # fine-tuning: train.init checked before workers
        plan = plan_run(
            loaded, resume=resume, overwrite=overwrite
        )  # one clear error before any worker starts
        if plan.finished:
            console.print(plan.finished_message(), highlight=False, soft_wrap=True)
            return
        worker_args = [str(recipe_path)]
        for text in overrides:
            worker_args += ["--set", text]
        worker_args += ["--resume"] if resume else []
        worker_args += ["--overwrite"] if overwrite else []
        launch(spec, worker_args)
        return

    from topofr_cli.engine.trainer import train as run_training

    result = run_training(loaded, resume=resume, overwrite=overwrite, progress=for_console(console))
    if result.rank != 0:
        return
    if result.finished_before:
        console.print(result.finished_before, highlight=False, soft_wrap=True)
        return
    if result.verification:
        from topofr_cli.evaluation.baseline import pixel_baselines

        console.print(_summary(result, pixel_baselines([score.path for score in result.verification])))
    console.print(
        f"run directory {result.run_dir} (train.log, metrics.csv, checkpoints/)",
        highlight=False,
        soft_wrap=True,
    )  # the numbers are in the summary line the run printed last
