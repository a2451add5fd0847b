"""An image folder with one sub-folder per identity: `root/<identity>/<image>`.

Identities are numbered in sorted sub-folder order; images are listed in sorted order, so the same
folder always gives the same labels and indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topofr_cli.data.images import ImageDecodeError, decode_image
from topofr_cli.errors import TopofrError


def printable_name(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes (held as surrogates by Python) become `\\xNN`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def list_image_folder(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(identity names, image paths relative to root, labels)."""
    if not root.is_dir():
        raise TopofrError(f"{root}: not a folder")
    identities = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not identities:
        raise TopofrError(f"{root}: no identity sub-folders (expected root/<identity>/<image>)")
    keys: list[str] = []
    labels: list[int] = []
    inside = _InsideCheck(root)
    for label, identity in enumerate(identities):
        files = sorted(
            p
            for p in (root / identity).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        for file in files:
            inside.check(file)
        keys.extend(p.relative_to(root).as_posix() for p in files)
        labels.extend([label] * len(files))
    if not keys:
        raise TopofrError(
            f"{root}: no images in its identity sub-folders (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return identities, keys, np.asarray(labels, dtype=np.int64)


class _InsideCheck:
    """Refuse an image reached through a symlink that leaves the folder: packing copies the bytes
    into the dataset, so a link to ~/.ssh/id_rsa named x.jpg would otherwise carry it out (pairs
    CSVs refuse the same). Folders are resolved once each; files only when they are links."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = root.resolve()
        self._real_dirs: dict[Path, bool] = {}

    def check(self, file: Path) -> None:
        if file.parent not in self._real_dirs:
            self._real_dirs[file.parent] = file.parent.resolve().is_relative_to(self.real_root)
        if self._real_dirs[file.parent] and not (
            file.is_symlink() and not file.resolve().is_relative_to(self.real_root)
        ):
            return
        raise TopofrError(
            f"{file}: a symbolic link to {file.resolve()}, outside {self.root} (images are read only "
            "from inside the folder)"
        )


class ImageFolderDataset:
    """Random access to `root/<identity>/<image>`; images are read from disk on each access."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            identities, self.keys, self.labels = list_image_folder(self.path)
        except OSError as exc:  # an unreadable sub-folder
            raise TopofrError(f"{exc.filename or self.path}: cannot list ({exc.strerror or exc})") from None
        self.identities = [printable_name(name) for name in identities]
        self.num_classes = len(self.identities)
        self.meta = {
            "format": "image-folder",
            "num_images": len(self.keys),
            "num_classes": self.num_classes,
            "source": str(self.path),
        }

    def __len__(self) -> int:
        return len(self.keys)

    def encoded(self, index: int) -> bytes:
        try:
            return (self.path / self.keys[index]).read_bytes()
        except OSError as exc:
            raise TopofrError(
                f"{self.path / self.keys[index]}: cannot read ({exc.strerror or exc})"
            ) from None

    def source_key(self, index: int) -> str:
        """The relative path as text; bytes of a non-UTF-8 name are shown as `\\xNN` escapes (the
        key goes into UTF-8 files such as index.parquet; `keys` keeps the name that opens the file)."""
        return printable_name(self.keys[index])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        try:
            image = decode_image(self.encoded(index))
        except ImageDecodeError as exc:
            raise TopofrError(f"{self.path / self.keys[index]}: {exc}") from None
        return image, int(self.labels[index])
