"""Throughput of face detection and of alignment (numpy warp vs OpenCV), one process and N workers.

    PYTHONPATH=$PWD python3 benchmarks/align.py [--workers N] [--repeat R]

Photos: the real portraits and group photo from tests/writers/photos.py (fetched from the registry).
Detection is dlib's HOG detector with the 5-point model (photos shrunk to 1024 px for the search);
alignment is one 112 x 112 crop per face from the full-size photo, landmarks fixed beforehand.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.writers.photos import fetch_photos  # noqa: E402
from topofr_cli.data.align import align_face, opencv_available  # noqa: E402
from topofr_cli.data.detect import make_detector  # noqa: E402

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg"]
_state: dict[str, object] = {}


def _load(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / name).convert("RGB")) for name in PHOTOS]


def _init(folder: str) -> None:
    _state["photos"] = _load(Path(folder))
    _state["detector"] = make_detector("dlib-hog")


def _detect(index: int) -> int:
    return len(_state["detector"].detect(_state["photos"][index]))  # type: ignore[attr-defined, index]


def _align(job: tuple[int, np.ndarray, str]) -> int:
    index, landmarks, backend = job
    return align_face(_state["photos"][index], landmarks, backend=backend).shape[0]  # type: ignore[index]


def _rate(function, jobs: list, workers: int, folder: Path) -> float:
    """Items per second over `jobs`, in this process or in a pool of `workers` (start-up not counted)."""
    if workers == 1:
        _init(str(folder))
        start = time.perf_counter()
        for job in jobs:
            function(job)
        return len(jobs) / (time.perf_counter() - start)
    with multiprocessing.get_context("fork").Pool(workers, _init, (str(folder),)) as pool:
        pool.map(_detect, range(workers))  # warm every worker
        start = time.perf_counter()
        pool.map(function, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
        return len(jobs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the photos for detection")
    args = parser.parse_args()
    folder = fetch_photos()
    photos = _load(folder)
    detector = make_detector("dlib-hog")
    faces = [(i, face.landmarks) for i, rgb in enumerate(photos) for face in detector.detect(rgb)]
    detect_jobs = list(range(len(photos))) * args.repeat
    align_jobs = {backend: [(i, lm, backend) for i, lm in faces] * 40 for backend in ("numpy", "opencv")}
    megapixels = np.mean([p.shape[0] * p.shape[1] / 1e6 for p in photos])
    print(
        f"{len(photos)} photos ({megapixels:.1f} Mpx on average), {len(faces)} faces, "
        f"{os.cpu_count()} CPUs, workers={args.workers}"
    )
    rows = [
        ("detect (dlib-hog + 5 points), photos/s", _detect, detect_jobs),
        ("align 112 px, numpy warp, faces/s", _align, align_jobs["numpy"]),
    ]
    if opencv_available():
        rows.append(("align 112 px, OpenCV warp, faces/s", _align, align_jobs["opencv"]))
    print(f"{'':42s} {'1 process':>10s} {f'{args.workers} workers':>11s}")
    for label, function, jobs in rows:
        single = _rate(function, jobs, 1, folder)
        pooled = _rate(function, jobs, args.workers, folder) if args.workers > 1 else float("nan")
        print(f"{label:42s} {single:10.1f} {pooled:11.1f}")


if __name__ == "__main__":
    main()
