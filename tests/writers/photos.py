"""Real photographs that packages on the registry ship, fetched once into a cache for tests and benchmarks.

The face_recognition 1.3.0 source distribution has portraits in tests/test_images (Obama, Biden);
the insightface 2.1 source distribution has a group photo (t1.jpg, six faces) and one face already
aligned by insightface (Tom_Hanks_54745.png, 112 x 112).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path(os.environ.get("TOPOFR_TEST_PHOTOS", Path.home() / ".cache" / "topofr-test-photos"))
SOURCES = {
    "face_recognition==1.3.0": (
        "face_recognition-1.3.0/tests/test_images/",
        ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face.jpg"],
    ),
    "insightface==2.1": ("insightface-2.1/insightface/data/images/", ["t1.jpg", "Tom_Hanks_54745.png"]),
}


class PhotosUnavailable(RuntimeError):
    """The registry could not be reached (or the archives changed): callers skip, naming the reason."""


def fetch_photos(cache: Path = CACHE) -> Path:
    """A folder holding every photo named in SOURCES, downloading the source archives when missing."""
    wanted = [name for _, names in SOURCES.values() for name in names]
    if all((cache / name).is_file() for name in wanted):
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    for requirement, (prefix, names) in SOURCES.items():
        if all((cache / name).is_file() for name in names):
            continue
        archive = _download_sdist(requirement, cache / "archives")
        with tarfile.open(archive) as tar:
            for name in names:
                member = tar.extractfile(prefix + name)
                if member is None:
                    raise PhotosUnavailable(f"{archive.name} has no {prefix + name}")
                partial = cache / f".{name}.part"
                partial.write_bytes(member.read())
                partial.replace(cache / name)
    return cache


def _download_sdist(requirement: str, folder: Path) -> Path:
    name, version = requirement.split("==")
    existing = sorted(folder.glob(f"{name}-{version}.tar.gz"))
    if existing:
        return existing[0]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(folder),
        requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise PhotosUnavailable(f"pip download {requirement} timed out (registry unreachable?)") from None
    found = sorted(folder.glob(f"{name}-{version}.tar.gz"))
    if not found:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise PhotosUnavailable(f"pip download {requirement} failed (registry unreachable?): {last}")
    return found[0]
