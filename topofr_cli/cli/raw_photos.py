"""`--detect` for commands that read a dataset: a folder of raw photos becomes aligned faces first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topofr_cli.cli.common import console

DETECT_HELP = (
    "--data is a folder of raw photos (one sub-folder per identity): detect, align (112 px) and "
    "use one face per photo; photos without a face are left out (needs pip install 'topofr\\[detect]')."
)
DETECTOR_HELP = (
    "With --detect: dlib-hog, dlib-hog-small (smaller faces, 3x slower), dlib-cnn, or "
    "package.module:factory for your own detector."
)


def open_data(data: Path, detector: str | None, workers: int = 1, progress: Any = None) -> Any:
    """open_dataset(data), or with a detector name the faces detected and aligned in a raw photo folder
    (kept in a temporary folder that lives as long as the returned dataset)."""
    from topofr_cli.data import open_dataset
    from topofr_cli.data.detect_folder import open_detected_folder

    if detector is None:
        return open_dataset(data)
    dataset, report = open_detected_folder(data, detector=detector, workers=workers, progress=progress)
    if report.no_face:
        console.print(
            f"[yellow]no face found in {len(report.no_face)} of {len(dataset) + len(report.no_face)} "
            f"photos[/] (left out, e.g. {report.no_face[0]})",
            highlight=False,
        )
    return dataset
