"""Pack a folder of raw photos (`root/<identity>/<photo>`): detect, pick one face, align, pack.

Every photo gets a row in `detections.csv` inside the packed set: how many faces were found, the
chosen box, its score and five landmarks, or why the photo was skipped. Photos without a face are
skipped and counted, never fatal. Work is spread over processes, each building its own detector.

detections.csv columns: key (photo path relative to the folder), label, status (packed, no_face,
unreadable), faces (how many found), score, box_x0 box_y0 box_x1 box_y1 (the chosen face), x1 y1 ...
x5 y5 (its five ArcFace landmarks in photo pixels: eyes, nose tip, mouth corners), reason.
"""

from __future__ import annotations

import csv
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np

from topofr_cli.artifacts.scratch import ScratchDir
from topofr_cli.data.align import align_face, template_for
from topofr_cli.data.detect import PICKS, FaceDetector, make_detector, pick_face
from topofr_cli.data.folder import ImageFolderDataset
from topofr_cli.data.images import ImageDecodeError, decode_image, encode_jpeg
from topofr_cli.data.packed import PackedDataset, PackedWriter
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, track

DETECTIONS_FILE = "detections.csv"
STATUS_PACKED, STATUS_NO_FACE, STATUS_UNREADABLE = "packed", "no_face", "unreadable"
_COLUMNS = (
    ["key", "label", "status", "faces", "score", "box_x0", "box_y0", "box_x1", "box_y1"]
    + [f"{axis}{n}" for n in range(1, 6) for axis in ("x", "y")]
    + ["reason"]
)


@dataclass
class DetectPackReport:
    out_dir: Path
    num_images: int
    num_classes: int
    no_face: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    seconds: float = 0.0


@dataclass
class _Outcome:
    status: str
    encoded: bytes | None = None
    faces: int = 0
    score: float = float("nan")
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    _: KW_ONLY  # at most six fields by position
    reason: str = ""


_worker_state: dict[str, object] = {}


def _start_worker(detector: str | FaceDetector, root: str, pick: str, size: int) -> None:
    built = make_detector(detector) if isinstance(detector, str) else detector
    _worker_state.update(detector=built, root=Path(root), pick=pick, size=size)


def _process(key: str) -> _Outcome:
    state = _worker_state
    detector: FaceDetector = state["detector"]  # type: ignore[assignment]
    try:
        rgb = decode_image((state["root"] / key).read_bytes())  # type: ignore[operator]
    except (ImageDecodeError, OSError) as exc:
        return _Outcome(STATUS_UNREADABLE, reason=str(exc))
    faces = detector.detect(rgb)
    if not faces:
        return _Outcome(STATUS_NO_FACE, reason="no face found")
    face = faces[pick_face(faces, rgb.shape[0], rgb.shape[1], str(state["pick"]))]
    try:
        crop = align_face(rgb, face.landmarks, size=int(state["size"]))  # type: ignore[arg-type]
    except ValueError as exc:  # degenerate landmarks from a plugged-in detector
        return _Outcome(STATUS_NO_FACE, faces=len(faces), reason=f"cannot align: {exc}")
    return _Outcome(
        STATUS_PACKED,
        encode_jpeg(crop),
        len(faces),
        face.score,
        np.asarray(face.box, dtype=float),
        np.asarray(face.landmarks, dtype=float).reshape(5, 2),
    )


def _outcomes(keys: list[str], workers: int, initargs: tuple, detector: FaceDetector) -> Iterator[_Outcome]:
    if workers <= 1:
        _start_worker(detector, *initargs[1:])  # the detector already built here: load its models once
        yield from map(_process, keys)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _start_worker, initargs) as pool:
        yield from pool.imap(_process, keys, chunksize=4)


def _row(key: str, label: int, outcome: _Outcome) -> list[object]:
    box = outcome.box if outcome.box is not None else [""] * 4
    points = outcome.landmarks.reshape(-1) if outcome.landmarks is not None else [""] * 10
    score = "" if np.isnan(outcome.score) else f"{outcome.score:.4f}"
    return (
        [key, label, outcome.status, outcome.faces, score]
        + [_number(v) for v in box]
        + [_number(v) for v in points]
        + [outcome.reason]
    )


def _number(value: object) -> str:
    return value if isinstance(value, str) else f"{float(value):.2f}"


def pack_detected_folder(
    source: str | Path,
    out_dir: str | Path,
    *,
    detector: str = "dlib-hog",
    pick: str = "largest",
    size: int = 112,
    workers: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: Progress | bool | None = None,
) -> DetectPackReport:
    """Detect, align (size x size, insightface's template convention) and pack one face per photo.

    An unreadable photo is an error naming it, or with `skip_bad` a skipped row. The detector is
    built once here (so a missing package fails before any work) and once per worker process.
    """
    start = time.perf_counter()
    source = Path(source)
    if pick not in PICKS:
        raise TopofrError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    try:
        template_for(size)
    except ValueError as exc:
        raise TopofrError(f"--size: {exc}") from None
    if workers < 1:
        raise TopofrError(f"--workers must be at least 1, got {workers}")
    dataset = ImageFolderDataset(source)
    built = make_detector(detector)  # fails here, before any work, when a package is missing
    report = DetectPackReport(out_dir=Path(out_dir), num_images=0, num_classes=dataset.num_classes)
    outcomes = _outcomes(dataset.keys, min(workers, len(dataset)), (detector, str(source), pick, size), built)
    with PackedWriter(out_dir, source=str(source), overwrite=overwrite) as writer:
        with open(writer.tmp_dir / DETECTIONS_FILE, "w", newline="", encoding="utf-8") as handle:
            table = csv.writer(handle)
            table.writerow(_COLUMNS)
            for index, outcome in enumerate(
                track(resolve_progress(progress), outcomes, "detecting", len(dataset))
            ):
                key, label = dataset.keys[index], int(dataset.labels[index])
                if outcome.status == STATUS_UNREADABLE:
                    if not skip_bad:
                        raise TopofrError(f"{source / key}: {outcome.reason}")
                    report.unreadable.append((key, outcome.reason))
                elif outcome.status == STATUS_NO_FACE:
                    report.no_face.append(key)
                else:
                    writer.add(outcome.encoded, label, key)  # type: ignore[arg-type]
                table.writerow(_row(key, label, outcome))
        if len(writer) == 0:
            raise TopofrError(f"{source}: no face found in any of its {len(dataset)} photos")
        report.out_dir = writer.finish(
            {
                "num_classes": dataset.num_classes,
                "identities": dataset.identities,
                "aligned": True,
                "detection": {
                    "detector": detector,
                    "pick": pick,
                    "size": size,
                    "photos": len(dataset),
                    "no_face": len(report.no_face),
                    "unreadable": len(report.unreadable),
                },
                **(
                    {"skipped": report.no_face + [key for key, _ in report.unreadable]}
                    if report.no_face or report.unreadable
                    else {}
                ),
            }
        )
    report.num_images = len(writer)
    report.seconds = time.perf_counter() - start
    return report


class DetectedPhotoDataset(PackedDataset):
    """Aligned faces packed into a temporary folder that is deleted with this object (not with copies
    pickled into worker processes, which do not own it)."""

    def __init__(self, path: Path, temporary: ScratchDir) -> None:
        super().__init__(path)
        self._temporary: ScratchDir | None = temporary

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state["_temporary"] = None
        return state


def open_detected_folder(
    source: str | Path,
    *,
    detector: str = "dlib-hog",
    pick: str = "largest",
    workers: int = 1,
    progress: Progress | bool | None = None,
) -> tuple[DetectedPhotoDataset, DetectPackReport]:
    """A raw photo folder as a dataset of aligned 112 x 112 faces (keys stay the photos' paths; photos
    without a face are left out and listed in the report)."""
    temporary = ScratchDir(prefix="topofr-detect-")
    try:
        report = pack_detected_folder(
            source,
            temporary.path / "aligned",
            detector=detector,
            pick=pick,
            workers=workers,
            progress=progress,
        )
        return DetectedPhotoDataset(report.out_dir, temporary), report
    except BaseException:
        temporary.cleanup()
        raise
