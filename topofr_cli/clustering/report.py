"""What `topofr cluster` leaves on disk: `clusters.csv`, `cluster_summary.json`, and with
`--write-folders` one folder of images per cluster, ready for `topofr prepare folder`."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from topofr_cli.artifacts.atomic import StagedDir, write_json, write_text

CSV_NAME = "clusters.csv"
SUMMARY_NAME = "cluster_summary.json"
DIAGRAM_NAME = "cluster_persistence"  # + the figure format's suffix
GALLERY_NAME = "cluster_gallery"
CSV_HEADER = ["index", "source_key", "cluster", "distance_to_core", "confidence"]


def clusters_csv(keys: list[str], labels: np.ndarray, distance: np.ndarray, confidence: np.ndarray) -> str:
    """One row per face: its key, its cluster (−1 = noise: a face left on its own), the cosine distance
    to its cluster's core and a confidence in [0, 1]."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(
        (i, key, int(label), f"{d:.6f}", f"{c:.6f}")
        for i, (key, label, d, c) in enumerate(zip(keys, labels, distance, confidence, strict=True))
    )
    return buffer.getvalue()


def write_reports(out: Path, csv_text: str, summary: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return write_text(out / CSV_NAME, csv_text), write_json(out / SUMMARY_NAME, summary)


def _suffix(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"\xff\xd8":
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:2] == b"BM":
        return ".bmp"
    return data[:4] in (b"II*\x00", b"MM\x00*") and ".tif" or ""


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_cluster_folders(target: Path, labels: np.ndarray, dataset: Any) -> int:
    """OUT/cluster_00000/… one folder per cluster (noise left out), each image copied under a name made
    here (its dataset index), so nothing can land outside OUT; built in a staging folder and moved in
    whole. Returns the number of images written."""
    written = 0
    with StagedDir(target) as staged:
        for cluster in range(int(labels.max()) + 1 if (labels >= 0).any() else 0):
            folder = staged / f"cluster_{cluster:05d}"
            folder.mkdir()
            for index in np.flatnonzero(labels == cluster):
                data = bytes(dataset.encoded(int(index)))
                if not _suffix(data):  # stored in a form no image reader opens: write it as PNG
                    data = _png(dataset[int(index)][0])
                (folder / f"{int(index):08d}{_suffix(data)}").write_bytes(data)
                written += 1
    return written
