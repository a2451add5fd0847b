"""`topofr cluster`: parse, call `commands.cluster.cluster`, show what it found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from topofr_cli.cli.common import console, user_errors
from topofr_cli.cli.json_output import json_option, prints_json
from topofr_cli.cli.raw_photos import DETECT_HELP, DETECTOR_HELP


@user_errors
@prints_json
def cluster(
    source: Path | None = typer.Argument(
        None, help="Faces to cluster: a packed set, an image folder, or raw photos with --detect."
    ),
    model: Path | None = typer.Option(None, "--model", help="Model that embeds INPUT (and the --bin pairs)."),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Cluster these embeddings (.parquet or .npy from `topofr eval --embeddings`).",
    ),
    method: str = typer.Option(
        "tomato", "--method", help="tomato (persistence-based, default), single or average linkage."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cut at this cosine distance (1 − cos): faces farther apart are never linked. Default: the "
        "widest gap between the within- and between-identity merge distances of the H0 persistence diagram.",
    ),
    far: float | None = typer.Option(
        None, "--far", help="Set the threshold at this false-accept rate measured on --bin (e.g. 1e-3)."
    ),
    bin_path: Path | None = typer.Option(None, "--bin", help="Verification .bin for --far (e.g. lfw.bin)."),
    clusters: int | None = typer.Option(
        None, "--clusters", help="ToMATo: keep this many clusters instead of cutting at the persistence gap."
    ),
    neighbors: int = typer.Option(10, "--neighbors", help="Nearest neighbours per face (graph and density)."),
    min_size: int = typer.Option(2, "--min-size", help="Smaller groups are noise (cluster −1)."),
    write_folders: Path | None = typer.Option(
        None,
        "--write-folders",
        help="Copy each cluster's images into OUT/cluster_NNNNN/ for `prepare folder`.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for clusters.csv, the summary and figures. Default: topofr-cluster/<INPUT>/.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace earlier results (and --write-folders)."
    ),
    detect: bool = typer.Option(False, "--detect", help=DETECT_HELP.replace("--data", "INPUT")),
    detector: str = typer.Option("dlib-hog", "--detector", help=DETECTOR_HELP),
    no_flip: bool = typer.Option(False, "--no-flip", help="Embed the image only, not image + mirror."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(2, "--workers", min=0, help="Image-decoding worker processes."),
    figure_format: str = typer.Option("png", "--figure-format", help="Figures as png, pdf or svg."),
    json_out: bool = json_option(),
) -> dict[str, Any]:
    """Group faces into identities by persistence (ToMATo) or linkage; noise stays apart."""
    from topofr_cli.cli.render import RichProgress
    from topofr_cli.commands.cluster import cluster as run

    name = (source or embeddings or Path("faces")).name
    result = run(
        source,
        model=model,
        embeddings=embeddings,
        out=out or Path("topofr-cluster") / name,
        method=method,
        threshold=threshold,
        far=far,
        bin_path=bin_path,
        clusters=clusters,
        neighbors=neighbors,
        min_size=min_size,
        write_folders=write_folders,
        overwrite=overwrite,
        detector=detector if detect else None,
        flip=not no_flip,
        batch_size=batch_size,
        device=device,
        workers=workers,
        figure_format=figure_format,
        progress=RichProgress(console),
    )
    _show(result)
    return result.to_json()


def _show(result: Any) -> None:
    s = result.summary
    console.print(
        f"{s['faces']:,} faces → {s['clusters']:,} clusters (largest {s['largest'][:5]}), {s['noise']:,} on their "
        f"own; {s['method']}, threshold {s['threshold']:.4f} ({s['threshold_source']}) in {s['seconds']:.1f} s",
        highlight=False,
    )
    if result.far is not None:
        console.print(
            f"at that threshold on the pairs: FAR {result.far.far:.2e}, TAR {result.far.tar:.4f}",
            highlight=False,
        )
    console.print(
        f"wrote {result.csv_path}, {result.summary_path.name}"
        + "".join(f", {p.name}" for p in result.figure_paths)
        + (f"; folders in {result.folders}" if result.folders else ""),
        highlight=False,
    )
