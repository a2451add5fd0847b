"""`topofr prepare folder | rec | bin | synthetic` as one call each: datasets in.

    import topofr_cli as tf
    result = tf.prepare_folder("photos", "data/photos", landmarks="photos/landmarks.csv")
    result.report.num_images

Each checks its output against its inputs and the output policy, claims it for the time it writes,
and returns a `PrepareResult` holding the data layer's report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.outputs import BIN, DATASET, check_output
from topofr_cli.commands.common import claims
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress

if TYPE_CHECKING:
    import numpy as np

    from topofr_cli.data.folder import ImageFolderDataset


@dataclass
class PrepareResult:
    """What `prepare <kind>` wrote: the data layer's report (`PackReport`, `DetectPackReport`,
    `BinReport` or `SyntheticReport`); `to_json()` is `topofr prepare <kind> --json`'s object."""

    kind: str  # folder, detected-folder, rec, bin, synthetic
    report: Any

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self.report)}


@dataclass
class FolderAligner:
    """The `transform` of `prepare folder --landmarks`: each image warped onto the ArcFace template by
    its row of the landmarks CSV, then JPEG-encoded."""

    dataset: ImageFolderDataset
    points: dict[str, np.ndarray]
    landmarks: Path
    size: int

    def __call__(self, index: int, rgb: np.ndarray) -> bytes:
        from topofr_cli.data.align import align_face
        from topofr_cli.data.images import encode_jpeg

        key = self.dataset.keys[index]
        if key not in self.points:
            raise TopofrError(f"no row in {self.landmarks}")
        try:
            return encode_jpeg(align_face(rgb, self.points[key], size=self.size))
        except ValueError as exc:
            raise TopofrError(f"cannot align: {exc}") from None


def check_size(size: int) -> None:
    from topofr_cli.data.align import template_for

    try:
        template_for(size)
    except ValueError as exc:
        raise TopofrError(f"--size: {exc}") from None


def _checked(out: Path, policy: Any, overwrite: bool, inputs: list) -> None:
    check_output(out, policy, overwrite=overwrite, inputs=inputs)


def prepare_folder(
    source: str | Path,
    out: str | Path,
    *,
    landmarks: str | Path | None = None,
    size: int = 112,
    detector: str | None = None,
    pick: str = "largest",
    workers: int = 1,
    skip_bad: bool = False,
    verify: bool = True,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> PrepareResult:
    """Pack an image folder (one sub-folder per identity) into `out`: as stored, aligned by the 5-point
    `landmarks` CSV, or (`detector`) detected and aligned, with OUT/detections.csv."""
    source, out = Path(source), Path(out)
    landmarks = Path(landmarks) if landmarks is not None else None
    progress = resolve_progress(progress)
    inputs = [source, landmarks]
    _checked(out, DATASET, overwrite, inputs)
    if detector is not None:
        from topofr_cli.data.detect_folder import pack_detected_folder

        if landmarks is not None:
            raise TopofrError("--detect and --landmarks exclude each other (--detect finds the landmarks)")
        with claims([out]):
            _checked(out, DATASET, overwrite, inputs)
            report = pack_detected_folder(
                source,
                out,
                detector=detector,
                pick=pick,
                size=size,
                workers=workers,
                skip_bad=skip_bad,
                overwrite=overwrite,
                progress=progress,
            )
        return PrepareResult("detected-folder", report)
    return PrepareResult(
        "folder", _pack_folder(source, out, landmarks, size, skip_bad, verify, overwrite, progress)
    )


def _pack_folder(
    source: Path,
    out: Path,
    landmarks: Path | None,
    size: int,
    skip_bad: bool,
    verify: bool,
    overwrite: bool,
    progress: Progress,
) -> Any:
    from topofr_cli.data.align import read_landmarks
    from topofr_cli.data.folder import ImageFolderDataset
    from topofr_cli.data.packed import pack_dataset

    dataset = ImageFolderDataset(source)
    check_size(size)
    transform, extra = None, {}
    if landmarks is not None:
        points = read_landmarks(landmarks, source)
        unknown = sorted(set(points) - set(dataset.keys))
        if unknown:
            raise TopofrError(f"{landmarks}: row for {unknown[0]}, which is not an image in {source}")
        transform = FolderAligner(dataset, points, landmarks, size)
        extra = {"aligned": True, "landmarks": str(landmarks)}
    with claims([out]):
        _checked(out, DATASET, overwrite, [source, landmarks])
        return pack_dataset(
            dataset,
            out,
            source=str(source),
            verify=verify,
            skip_bad=skip_bad,
            transform=transform,
            num_classes=dataset.num_classes,
            overwrite=overwrite,
            extra_meta={**extra, "identities": dataset.identities},
            progress=progress,
        )


def prepare_rec(
    source: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    verify: bool = True,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> PrepareResult:
    """Copy an insightface RecordIO set (folder, prefix or .rec) into the packed format, byte for byte."""
    from topofr_cli.data.packed import pack_dataset
    from topofr_cli.data.recordio import RecordIODataset

    out = Path(out)
    _checked(out, DATASET, overwrite, [source])
    dataset = RecordIODataset(source)
    inputs = [source, dataset.rec_path]
    with claims([out]):
        _checked(out, DATASET, overwrite, inputs)
        report = pack_dataset(
            dataset,
            out,
            source=str(dataset.rec_path),
            verify=verify,
            skip_bad=skip_bad,
            num_classes=dataset.num_classes,
            overwrite=overwrite,
            progress=resolve_progress(progress),
        )
    return PrepareResult("rec", report)


def prepare_bin(
    pairs: str | Path,
    out: str | Path,
    *,
    size: int | None = None,
    skip_bad: bool = False,
    verify: bool = True,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> PrepareResult:
    """Build a verification .bin (insightface format) from a CSV of image pairs."""
    from topofr_cli.data.bins import build_bin

    pairs, out = Path(pairs), Path(out)
    if not pairs.is_file():
        raise TopofrError(f"{pairs}: no such file")
    _checked(out, BIN, overwrite, [pairs])
    with claims([out]):
        _checked(out, BIN, overwrite, [pairs])
        report = build_bin(
            pairs,
            out,
            size=size,
            verify=verify,
            skip_bad=skip_bad,
            overwrite=overwrite,
            progress=resolve_progress(progress),
        )
    return PrepareResult("bin", report)


def prepare_synthetic(
    out: str | Path, *, overwrite: bool = False, progress: Progress | bool | None = None, **options: Any
) -> PrepareResult:
    """Generate procedural faces into `out` (a packed set plus its held-out verification .bin);
    `options` are `data.synthetic.generate_synthetic`'s (identities, images_per_identity, ...)."""
    from topofr_cli.data.synthetic import generate_synthetic
    from topofr_cli.evaluation.baseline import pixel_baseline

    out = Path(out)
    _checked(out, DATASET, overwrite, [])
    with claims([out]):
        _checked(out, DATASET, overwrite, [])
        report = generate_synthetic(
            out, overwrite=overwrite, baseline=pixel_baseline, progress=resolve_progress(progress), **options
        )
    return PrepareResult("synthetic", report)
