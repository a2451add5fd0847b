"""`topofr train RECIPE`: train (or resume) a face recognition model from a YAML recipe."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from topofr_cli.cli.common import console, user_errors
from topofr_cli.cli.render import PlainProgress, for_console, printer
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
        False,
        "--overwrite",
        help="Replace an existing non-empty run directory (train.output) that topofr wrote "
        "(never one holding or inside the training data).",
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
    from topofr_cli.commands.train import load_training_recipe, with_shorthands
    from topofr_cli.commands.train import train as run_training
    from topofr_cli.engine.launch import LaunchSpec
    from topofr_cli.recipes import packaged_recipes

    if recipe is None and not print_config:
        raise TopofrError(
            f"name a RECIPE: a YAML file or a packaged recipe ({', '.join(packaged_recipes())})"
        )
    if print_config:
        import yaml

        loaded = load_training_recipe(recipe, with_shorthands(overrides, device=device, init=init))
        typer.echo(yaml.safe_dump(loaded.to_dict(), sort_keys=False), nl=False)
        return
    progress = for_console(console)
    say = printer(progress, console)  # plain: each line timed
    result = run_training(
        recipe,
        overrides=overrides,
        resume=resume,
        overwrite=overwrite,
        device=device,
        init=init,
        launch=LaunchSpec(nproc_per_node, nnodes, node_rank, rdzv_endpoint),
        progress=progress,
    )
    if result.message:
        say(escape(result.message))
    if result.run is None or result.run.rank != 0 or result.message:
        return
    if result.run.verification:
        table = _summary(result.run, result.pixel_baselines)
        if isinstance(progress, PlainProgress):
            for line in _table_lines(table):
                say(escape(line))
        else:
            console.print(table)
    say(f"run directory {escape(str(result.run.run_dir))} (train.log, metrics.csv, checkpoints/)")
    # the numbers are in the summary line the run printed last


def _table_lines(table: Table) -> list[str]:
    """The verification table as `set: model … (raw-pixel baseline …)` lines, for a log file."""
    columns = [[str(cell) for cell in column.cells] for column in table.columns]
    heading = str(table.title)
    return [
        f"{heading}: {name} {model} (raw-pixel baseline {pixels})"
        for name, model, pixels in zip(*columns, strict=True)
    ]
