"""`topofr bench`: check every device path and measure the training step, as tables and/or one JSON."""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.console import Console

from topofr_cli.bench.plan import SECTION_BUDGETS_S
from topofr_cli.cli.common import console, err_console, fail, user_errors
from topofr_cli.devices import DEVICE_NAMES

BUDGETS_HELP = ", ".join(f"{name} {seconds} s" for name, seconds in SECTION_BUDGETS_S.items())
JSON_NAME, TEXT_NAME = "bench.json", "bench.txt"
HELP = (
    "How fast is TopoFR on this hardware, what does it cost over plain ArcFace, and is every device path right?"
    "\n\nSections: 1 correctness on the device (h0 pairs, PTSA loss and gradient, GUM vs the CPU; RSP seeded; "
    "bf16 and fp16 steps finite; no host–device sync in the step); 2 throughput (plain vs TopoFR steps, r50, "
    "85,742 classes, B 128/256, bf16 + channels-last, eager and compiled; PTSA, RSP and SDE alone; h0 pairs at "
    "n = 128/512/1024; the data loader); 3 multi-GPU (2 ranks vs 1 process, img/s per GPU, all-gather bytes)."
    "\n\nThe full CUDA run fits in 8 minutes on one H200: each section starts no new measurement once its "
    f"budget is spent ({BUDGETS_HELP}). Exit code 1 when a check fails."
)


@user_errors
def bench(
    device: str = typer.Option(
        "auto", "--device", help=f"Where to run: {DEVICE_NAMES} (auto: CUDA when present)."
    ),
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Every section, small: one batch size, no torch.compile; on "
        "the CPU a MobileFaceNet and a few classes (well under a minute).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object on stdout (tables go to stderr)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help=f"Also write {JSON_NAME} and {TEXT_NAME} here."
    ),
) -> None:
    from topofr_cli.bench import run_bench
    from topofr_cli.bench.report import TABLES, heading, to_json, write_atomic
    from topofr_cli.bench.runner import section
    from topofr_cli.devices import resolve_device

    resolve_device(device)  # a missing GPU is one error line before anything starts
    shown = err_console if as_json else console
    shown.print("topofr bench: starting", highlight=False)
    result = run_bench(device, quick, on_section=lambda key, part: shown.print(TABLES[key](part)))
    shown.print(heading(result) + f" — {result['elapsed_s']:.0f} s", highlight=False)
    if out is not None:
        text = Console(file=io.StringIO(), width=200, color_system=None)
        text.print(heading(result))
        for key, render in TABLES.items():
            text.print(render(section(result, key)))
        write_atomic(out / TEXT_NAME, text.file.getvalue())
        write_atomic(out / JSON_NAME, to_json(result))
        shown.print(f"wrote {out / JSON_NAME} and {out / TEXT_NAME}", highlight=False)
    if as_json:
        typer.echo(to_json(result), nl=False)
    failed = result["correctness"]["failed"] + (
        ["multi-GPU equality"] if result["multi_gpu"]["status"] == "fail" else []
    )
    if failed:
        fail(f"checks failed: {', '.join(failed)}")
        raise typer.Exit(1)


bench.__doc__ = HELP
