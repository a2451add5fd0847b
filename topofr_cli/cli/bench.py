"""`topofr bench`: check every device path and measure the training step, as tables and/or one JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from topofr_cli.bench.plan import SECTION_BUDGETS_S
from topofr_cli.cli.common import console, err_console, fail, user_errors
from topofr_cli.devices import DEVICE_NAMES

BUDGETS_HELP = ", ".join(f"{name} {seconds} s" for name, seconds in SECTION_BUDGETS_S.items())
JSON_NAME, TEXT_NAME = "bench.json", "bench.txt"  # commands.bench writes them
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
HELP = (
    "How fast is TopoFR on this hardware, what does it cost over plain ArcFace, and is every device path right?"
    "\n\nSections: 1 correctness on the device (h0 pairs, PTSA loss and gradient, GUM vs the CPU; RSP seeded; "
    "bf16 and fp16 steps finite; no host–device sync in the step); 2 throughput (plain vs TopoFR steps, r50, "
    "85,742 classes, B 128/256, channels-last, eager and compiled, timed interleaved; PTSA, RSP and SDE alone; h0 pairs at "
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
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="The training steps' precision: auto (bf16 on a GPU that has it, else fp16; fp32 on the CPU), "
        "fp32, bf16 or fp16.",
    ),
) -> None:
    from topofr_cli.cli.render import for_console
    from topofr_cli.cli.render_bench import TABLES, heading, report_text
    from topofr_cli.commands.bench import bench as run
    from topofr_cli.devices import resolve_device

    if precision not in PRECISIONS:
        fail(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
        raise typer.Exit(2)
    resolve_device(device)  # a missing GPU is one error line before anything starts
    shown = err_console if as_json else console
    shown.print("topofr bench: starting", highlight=False)
    result = run(
        device,
        quick=quick,
        precision=precision,
        out=out,
        progress=for_console(shown),
        on_section=lambda key, part: shown.print(TABLES[key](part)),
        render_text=report_text,
    )
    shown.print(heading(result.report) + f" — {result.report['elapsed_s']:.0f} s", highlight=False)
    if result.written:
        shown.print("wrote " + " and ".join(str(p) for p in result.written), highlight=False)
    if as_json:
        typer.echo(result.to_json(), nl=False)
    if result.failed:
        fail(f"checks failed: {', '.join(result.failed)}")
        raise typer.Exit(1)


bench.__doc__ = HELP
