"""`topofr prepare ...`: datasets in (RecordIO, image folders, pair CSVs, synthetic faces)."""

from __future__ import annotations

from pathlib import Path

import typer

from topofr_cli.cli.common import console, user_errors
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.render import bars, for_console, printer

app = typer.Typer(
    help="Bring datasets in: pack RecordIO or image folders, build .bin pair files, "
    "or generate synthetic faces.",
    no_args_is_help=True,
)

_SHOWN_SKIPS = 20
OVERWRITE_HELP = (
    "Replace OUT if it exists and topofr wrote it (never an input, nor a folder it did not write)."
)


def _report_skipped(skipped: list[tuple[object, str]], what: str) -> None:
    if not skipped:
        return
    console.print(f"[yellow]skipped {len(skipped)} {what}:[/]", highlight=False)
    for key, reason in skipped[:_SHOWN_SKIPS]:
        console.print(f"  {key}: {reason}", highlight=False, soft_wrap=True)
    if len(skipped) > _SHOWN_SKIPS:
        console.print(f"  ... and {len(skipped) - _SHOWN_SKIPS} more (all listed in meta.json 'skipped')")


@app.command("folder")
@user_errors
@prints_json
def prepare_folder(
    source: Path = typer.Argument(..., help="Image folder with one sub-folder per identity."),
    out: Path = typer.Argument(..., help="Output packed dataset directory (must not exist)."),
    landmarks: Path | None = typer.Option(
        None,
        "--landmarks",
        help="CSV of 'path, x1 y1 ... x5 y5' (path relative to SOURCE): align every "
        "image onto the ArcFace template before packing.",
    ),
    size: int = typer.Option(
        112,
        "--size",
        help="Side of the aligned crop (with --landmarks or --detect): a "
        "multiple of 112, or of 128 (insightface's convention: the 112 face, 8 px margins).",
    ),
    detect: bool = typer.Option(
        False,
        "--detect",
        help="Raw photos: find the face in each, align it and pack it "
        "(needs pip install 'topofr\\[detect]'). Writes OUT/detections.csv.",
    ),
    detector: str = typer.Option(
        "dlib-hog",
        "--detector",
        help="With --detect: dlib-hog (fast; faces of 80 px "
        "and more in the photo shrunk to 1024 px), dlib-hog-small (down to 40 px, 3x slower), "
        "dlib-cnn (more poses, slow on CPU), or package.module:factory for your own detector.",
    ),
    pick: str = typer.Option(
        "largest",
        "--pick",
        help="With --detect, the face kept when a photo has several: "
        "largest or central (box centre nearest the photo centre).",
    ),
    workers: int = typer.Option(1, "--workers", help="With --detect: detection processes."),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="Leave out undecodable images (and, with "
        "--landmarks, images without a row) and list them, instead of failing.",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Do not decode each image to check it (without --landmarks)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    json_out: bool = json_option(),
) -> dict:
    """Pack an image folder (optionally 5-point aligned, or detected and aligned) into the packed format."""
    from topofr_cli.commands.prepare import prepare_folder as pack_folder

    result = pack_folder(
        source,
        out,
        landmarks=landmarks,
        size=size,
        detector=detector if detect else None,
        pick=pick,
        workers=workers,
        skip_bad=skip_bad,
        verify=not no_verify,
        overwrite=overwrite,
        progress=bars(console),
    )
    report = result.report
    if result.kind == "folder":
        _report_skipped(report.skipped, "images")
        console.print(
            f"packed {report.num_images} images of {report.num_classes} identities into {report.out_dir}",
            highlight=False,
        )
    else:
        _show_detected(report)
    return result.to_json()


def _show_detected(report) -> None:
    from topofr_cli.data.detect_folder import DETECTIONS_FILE

    _report_skipped(report.unreadable, "unreadable images")
    if report.no_face:
        console.print(
            f"[yellow]no face found in {len(report.no_face)} photos[/] (listed in "
            f"{report.out_dir / DETECTIONS_FILE})",
            highlight=False,
        )
    total = report.num_images + len(report.no_face) + len(report.unreadable)
    console.print(
        f"packed {report.num_images} aligned faces of {report.num_classes} identities into "
        f"{report.out_dir} ({total / report.seconds:.1f} photos/s)",
        highlight=False,
    )


@app.command("rec")
@user_errors
@prints_json
def prepare_rec(
    source: Path = typer.Argument(
        ..., help="insightface RecordIO: folder with train.rec/.idx, a prefix, or the .rec file."
    ),
    out: Path = typer.Argument(..., help="Output packed dataset directory (must not exist)."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out undecodable images and list them, instead of failing."
    ),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Copy bytes without decoding each image (faster; corrupt images are not caught).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    json_out: bool = json_option(),
) -> dict:
    """Copy a RecordIO set into the packed format, byte for byte (no re-encoding)."""
    from topofr_cli.commands.prepare import prepare_rec as pack_rec

    result = pack_rec(
        source, out, skip_bad=skip_bad, verify=not no_verify, overwrite=overwrite, progress=bars(console)
    )
    report = result.report
    _report_skipped(report.skipped, "images")
    console.print(
        f"packed {report.num_images} images of {report.num_classes} classes into {report.out_dir}",
        highlight=False,
    )
    return result.to_json()


@app.command("bin")
@user_errors
@prints_json
def prepare_bin(
    pairs: Path = typer.Argument(
        ..., help="CSV with columns path1, path2, issame (paths relative to the CSV's folder)."
    ),
    out: Path = typer.Argument(..., help="Output .bin file."),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Resize every image to SIZE x SIZE and re-encode "
        "as JPEG (default: store the files' bytes as they are).",
    ),
    skip_bad: bool = typer.Option(
        False,
        "--skip-bad",
        help="Leave out pairs with an unreadable image and list them, instead of failing.",
    ),
    no_verify: bool = typer.Option(False, "--no-verify", help="Do not decode each image to check it."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    json_out: bool = json_option(),
) -> dict:
    """Build a verification .bin (insightface format) from a CSV of image pairs."""
    from topofr_cli.commands.prepare import prepare_bin as build_bin

    result = build_bin(
        pairs,
        out,
        size=size,
        verify=not no_verify,
        skip_bad=skip_bad,
        overwrite=overwrite,
        progress=bars(console),
    )
    report = result.report
    _report_skipped(report.skipped, "pairs (by CSV line)")
    console.print(f"wrote {report.num_pairs} pairs to {report.path}", highlight=False)
    return result.to_json()


@app.command("synthetic")
@user_errors
@prints_json
def synthetic(
    out: Path = typer.Argument(..., help="Output packed dataset directory (must not exist)."),
    identities: int = typer.Option(200, "--identities", help="Training identities (labels 0..N-1)."),
    images_per_identity: int = typer.Option(
        20, "--images-per-identity", help="Photos per identity (training and held-out)."
    ),
    heldout_identities: int = typer.Option(
        100, "--heldout-identities", help="Identities used only in the verification .bin."
    ),
    pairs: int = typer.Option(600, "--pairs", help="Verification pairs (even; half genuine, half impostor)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same bytes."),
    quality: int = typer.Option(
        90,
        "--quality",
        help="Best JPEG quality; each photo draws its own "
        "quality up to 30 below it (scaled by --difficulty).",
    ),
    difficulty: float = typer.Option(
        1.0,
        "--difficulty",
        help="Scale of the per-photo nuisance (pose, "
        "light, colour cast, occluders, blur, noise, JPEG), 0 to 3.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Rendering processes (default: CPU count for large sets, 1 for small ones)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: bool = json_option(),
) -> dict:
    """Generate procedural face-like images: a packed training set plus a held-out verification .bin."""
    from rich.markup import escape

    from topofr_cli.commands.prepare import prepare_synthetic
    from topofr_cli.progress import SILENT

    # not a terminal (nohup, SLURM, a pipe): a timed line per stage and during long ones
    shown = for_console(console, elapsed=True) if progress else SILENT
    say = printer(shown, console)
    result = prepare_synthetic(
        out,
        identities=identities,
        images_per_identity=images_per_identity,
        heldout_identities=heldout_identities,
        pairs=pairs,
        seed=seed,
        progress=shown,
        difficulty=difficulty,
        quality=quality,
        workers=workers,
        overwrite=overwrite,
    )
    report = result.report
    baseline = report.pixel_baseline
    say(
        f"wrote {report.num_images} images of {report.num_classes} identities to {escape(str(report.out_dir))} "
        f"in {report.seconds:.1f} s"
    )
    say(
        f"verification pairs: {report.pairs} of {report.heldout_identities} held-out identities "
        f"in {escape(str(report.bin_path))}"
    )
    colour = "green" if baseline.accuracy_mean < 0.75 else "yellow"
    say(
        f"raw-pixel baseline accuracy: [{colour}]{100 * baseline.accuracy_mean:.2f}% "
        f"± {100 * baseline.accuracy_std:.2f}[/] (a trained model should beat this clearly)"
    )
    return result.to_json()
