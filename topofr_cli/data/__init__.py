"""Datasets: one `open_dataset(path)` for packed sets, insightface RecordIO and image folders."""

from __future__ import annotations

from pathlib import Path

from topofr_cli.data.dataset import FaceDataset
from topofr_cli.data.detect import DetectedFace, FaceDetector, align_faces, make_detector, register_detector
from topofr_cli.data.folder import ImageFolderDataset
from topofr_cli.data.packed import INDEX_FILE, PackedDataset, is_packed_dir
from topofr_cli.data.recordio import RecordIODataset, resolve_prefix
from topofr_cli.errors import TopofrError


def open_dataset(path: str | Path) -> FaceDataset:
    """Open a packed directory, a RecordIO folder/prefix/`.rec`, or an image folder (one sub-folder per id)."""
    path = Path(path)
    if path.is_dir() and (is_packed_dir(path) or (path / INDEX_FILE).is_file()):
        return PackedDataset(path)  # with an index, a damaged meta.json is reported, not read as a folder
    if resolve_prefix(path) is not None:
        return RecordIODataset(path)
    if path.is_dir():
        return ImageFolderDataset(path)
    if not path.exists():
        raise TopofrError(f"{path}: no such file or directory")
    raise TopofrError(f"{path}: not a dataset (expected a packed folder, a .rec, or an image folder)")


__all__ = [
    "DetectedFace",
    "FaceDataset",
    "FaceDetector",
    "ImageFolderDataset",
    "PackedDataset",
    "RecordIODataset",
    "align_faces",
    "make_detector",
    "open_dataset",
    "register_detector",
]
