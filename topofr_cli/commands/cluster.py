"""`topofr cluster`: group unlabelled faces into identities (docs/method.md §7).

Faces come from a dataset embedded with a model (packed set, image folder, or raw photos with a
detector) or from an embeddings file written by `topofr eval --embeddings`. The report folder gets
`clusters.csv`, `cluster_summary.json`, the persistence figure and, when images are at hand, a
gallery of the largest clusters; `write_folders` lays the clusters out for `topofr prepare folder`.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.artifacts.outputs import DATASET, REPORT, check_output
from topofr_cli.clustering import report as files
from topofr_cli.clustering.run import EmbeddingClustering, check_options, cluster_embeddings
from topofr_cli.clustering.thresholds import ThresholdAtFar, threshold_at_far
from topofr_cli.commands.common import claims, clamped_workers, is_fresh, mark, open_data
from topofr_cli.errors import TopofrError
from topofr_cli.progress import SILENT, Progress


@dataclass
class ClusterResult:
    clustering: EmbeddingClustering
    keys: list[str]
    out: Path
    csv_path: Path
    summary_path: Path
    figure_paths: list[Path]
    folders: Path | None = None
    far: ThresholdAtFar | None = None
    seconds: float = 0.0
    peak_memory_mib: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """`topofr cluster --json`'s object: the summary and the files written."""
        return {
            **self.summary,
            "csv": self.csv_path,
            "summary_json": self.summary_path,
            "figures": self.figure_paths,
            "folders": self.folders,
        }


def read_embeddings_file(path: Path) -> tuple[np.ndarray, list[str]]:
    """Embeddings [N, E] and source keys from the `.parquet` or `.npy` that `eval --embeddings` writes."""
    if not path.is_file():
        raise TopofrError(f"{path}: embeddings file not found")
    try:
        if path.suffix.lower() == ".npy":
            x = np.load(path, allow_pickle=False)
            keys = [str(i) for i in range(len(x))]
        elif path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=["source_key", "embedding"])
            keys = [str(k) for k in table.column("source_key").to_pylist()]
            x = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
        else:
            raise TopofrError(f"{path}: --embeddings must be a .parquet or .npy file")
    except TopofrError:
        raise
    except Exception as exc:  # any reader failure is the file's fault: name it
        raise TopofrError(f"{path}: not a readable embeddings file ({type(exc).__name__}: {exc})") from None
    if x.ndim != 2 or len(x) < 3 or x.shape[1] < 1:
        raise TopofrError(f"{path}: expected embeddings [N ≥ 3, E], got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise TopofrError(f"{path}: row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])} is not finite")
    return x.astype(np.float32, copy=False), keys


def embed_dataset(
    backbone: Any, dataset: Any, *, flip: bool, batch_size: int, device: Any, workers: int, progress: Progress
) -> np.ndarray:
    from topofr_cli.data.ordered import DatasetImages, GuardedImages, iterate_batches
    from topofr_cli.evaluation.embed import embed_images

    task = progress.start(f"embed {Path(dataset.path).name}", len(dataset), transient=True)
    try:
        images = GuardedImages(DatasetImages(dataset), len(dataset))
        batches = iterate_batches(images, batch_size=batch_size, num_workers=workers, on_images=task.advance)
        return embed_images(backbone, batches, flip=flip, device=device)
    finally:
        task.close()


def far_threshold(backbone: Any, bin_path: Path, far: float, **embed: Any) -> ThresholdAtFar:
    """τ at `far` measured on a verification `.bin` (cosine distances of its flip-summed embeddings)."""
    from topofr_cli.evaluation.verification import evaluate_bin

    result = evaluate_bin(backbone, bin_path, **embed)
    return threshold_at_far(np.asarray(result.distances) / 2.0, result.issame, far, source=str(bin_path))


def _summary(result: EmbeddingClustering, keys: list[str], far: ThresholdAtFar | None) -> dict[str, Any]:
    labels = result.labels
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, dtype=int)
    return {
        "faces": len(labels),
        "method": result.method,
        "clusters": int(len(sizes)),
        "noise": int((labels < 0).sum()),
        "largest": [int(s) for s in sizes[:10]],
        "threshold": result.threshold,
        "threshold_source": result.threshold_source,
        "merge_cut": result.clustering.cut,
        "far": None if far is None else {"far": far.far, "tar": far.tar, "impostor_pairs": far.impostors},
    }


def cluster(
    source: Path | None = None,
    *,
    model: Path | None = None,
    embeddings: Path | None = None,
    out: Path,
    method: str = "tomato",
    threshold: float | None = None,
    far: float | None = None,
    bin_path: Path | None = None,
    clusters: int | None = None,
    neighbors: int = 10,
    min_size: int = 2,
    write_folders: Path | None = None,
    overwrite: bool = False,
    detector: str | None = None,
    flip: bool = True,
    batch_size: int = 64,
    device: Any = "auto",
    workers: int = 2,
    figure_format: str = "png",
    progress: Progress = SILENT,
) -> ClusterResult:
    """Cluster the faces of `source` (a dataset, or raw photos with `detector`) embedded by `model`, or
    the rows of `embeddings`; write the reports to `out` (and the clusters' images to `write_folders`).
    Outputs follow the output policy: never an input, earlier results replaced only with `overwrite`
    and only where topofr wrote them, each held by this call while it writes."""
    from topofr_cli.devices import resolve_device
    from topofr_cli.plots.style import check_format

    started = time.perf_counter()
    check_format(figure_format)
    check_options(method, clusters, threshold, neighbors, min_size)
    device = resolve_device(device) if model is not None else "cpu"  # no model: nothing runs on it
    workers = clamped_workers(workers, progress) if model is not None else workers
    if embeddings is None and (source is None or model is None):
        raise TopofrError("give INPUT with --model MODEL, or --embeddings FILE")
    if far is not None and (bin_path is None or model is None or threshold is not None):
        raise TopofrError("--far needs --bin FILE and --model MODEL, and replaces --threshold")
    if write_folders is not None and source is None:
        raise TopofrError("--write-folders needs INPUT (the images to lay out)")
    names = [files.CSV_NAME, files.SUMMARY_NAME, f"{files.DIAGRAM_NAME}.{figure_format}"]
    names += [f"{files.GALLERY_NAME}.{figure_format}"]
    inputs = [source, model, embeddings, bin_path]
    _check_outputs(out, write_folders, names, inputs, overwrite)
    with claims([out, write_folders]):
        _check_outputs(out, write_folders, names, inputs, overwrite)  # again, now that we hold them
        fresh = is_fresh(out)
        result = _cluster(
            source,
            model=model,
            embeddings=embeddings,
            out=out,
            method=method,
            threshold=threshold,
            far=far,
            bin_path=bin_path,
            clusters=clusters,
            neighbors=neighbors,
            min_size=min_size,
            write_folders=write_folders,
            detector=detector,
            embed={"flip": flip, "batch_size": batch_size, "device": device},
            workers=workers,
            figure_format=figure_format,
            progress=progress,
            started=started,
        )
        mark(out, "cluster", fresh=fresh)
    return result


def _check_outputs(out: Path, folders: Path | None, names: list[str], inputs: list, overwrite: bool) -> None:
    check_output(out, REPORT, overwrite=overwrite, results=names, inputs=inputs)
    if folders is not None:
        _check_folders(folders, out, overwrite, inputs)


def _cluster(
    source: Path | None,
    *,
    model: Path | None,
    embeddings: Path | None,
    out: Path,
    method: str,
    threshold: float | None,
    far: float | None,
    bin_path: Path | None,
    clusters: int | None,
    neighbors: int,
    min_size: int,
    write_folders: Path | None,
    detector: str | None,
    embed: dict[str, Any],
    workers: int,
    figure_format: str,
    progress: Progress,
    started: float,
) -> ClusterResult:
    dataset = None
    if source is not None:
        dataset = open_data(Path(source), detector, workers=max(1, workers), progress=progress)
    backbone = None
    if model is not None:
        from topofr_cli.evaluation.model_io import load_model

        backbone = load_model(model).backbone
    if embeddings is not None:
        x, keys = read_embeddings_file(embeddings)
        if dataset is not None and len(dataset) != len(x):
            raise TopofrError(f"{embeddings}: {len(x)} embeddings but {source} has {len(dataset)} images")
    else:
        x = embed_dataset(backbone, dataset, workers=workers, progress=progress, **embed)
    if dataset is not None:
        keys = [dataset.source_key(i) for i in range(len(dataset))]
    at_far = None
    if far is not None:
        at_far = far_threshold(backbone, bin_path, far, num_workers=workers, **embed)
        threshold = at_far.threshold
    source_text = "given" if at_far is None else f"FAR {far:g} on {Path(bin_path).name}"
    with progress_status(progress, f"clustering {len(x):,} faces ({method})"):
        result = cluster_embeddings(
            x,
            method=method,
            threshold=threshold,
            threshold_source=source_text,
            clusters=clusters,
            neighbors=neighbors,
            min_size=min_size,
        )
    return _write(result, keys, dataset, out, write_folders, at_far, figure_format, started)


def progress_status(progress: Progress, text: str):
    """A one-line task on `progress` for a step without a count."""
    from contextlib import contextmanager

    @contextmanager
    def status():
        task = progress.start(text, None, transient=True)
        try:
            yield
        finally:
            task.close()

    return status()


def _check_folders(target: Path, out: Path, overwrite: bool, inputs: list) -> None:
    resolved, other = target.resolve(), out.resolve()
    if resolved == other or resolved in other.parents or other in resolved.parents:
        raise TopofrError(f"{target}: --write-folders must not be, contain or lie inside {out}")
    check_output(target, DATASET, overwrite=overwrite, inputs=inputs)


def _write(result, keys, dataset, out, write_folders, at_far, figure_format, started) -> ClusterResult:
    from topofr_cli.plots.clustering import plot_cluster_gallery, plot_cluster_persistence
    from topofr_cli.plots.style import FigureMeta

    out.mkdir(parents=True, exist_ok=True)
    csv_text = files.clusters_csv(keys, result.labels, result.distance_to_core, result.confidence)
    summary = _summary(result, keys, at_far)
    meta = FigureMeta(dataset=summary["method"], n=len(keys), n_label="faces")
    tomato = None
    if result.method == "tomato":
        tomato = (result.clustering.diagram, result.clustering.cut, summary["clusters"])
    figures = [
        plot_cluster_persistence(
            result.merge_heights,
            result.threshold,
            meta,
            out / files.DIAGRAM_NAME,
            tomato=tomato,
            figure_format=figure_format,
        )
    ]
    if dataset is not None and summary["clusters"]:
        figures.append(
            plot_cluster_gallery(
                dataset, result.labels, meta, out / files.GALLERY_NAME, figure_format=figure_format
            )
        )
    folders = None
    if write_folders is not None:
        files.write_cluster_folders(write_folders, result.labels, dataset)
        mark(write_folders, "cluster", fresh=True)  # a folder this call made whole (staged, moved in)
        folders = write_folders
    summary["seconds"] = time.perf_counter() - started
    summary["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    csv_path, summary_path = files.write_reports(out, csv_text, summary)
    return ClusterResult(
        result,
        keys,
        out,
        csv_path,
        summary_path,
        figures,
        folders,
        at_far,
        summary["seconds"],
        summary["peak_memory_mib"],
        summary,
    )
