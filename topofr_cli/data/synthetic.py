"""Synthetic face datasets: a packed training set plus a `.bin` of held-out identities.

Every identity (training or held-out) has its own random stream derived from (seed, role, index),
so the output bytes depend only on the arguments, not on the number of worker processes.
Rendering lives in `synthetic_render` (the person) and `synthetic_nuisance` (the photo). How hard
the pairs are for raw pixels is measured by a `baseline` function the caller passes in
(`topofr_cli.evaluation.baseline.pixel_baseline`): data sits below evaluation and does not import it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from topofr_cli.data.bins import write_bin
from topofr_cli.data.folds import NUM_FOLDS, kfold_splits
from topofr_cli.data.packed import PackedWriter
from topofr_cli.data.synthetic_nuisance import draw_nuisance
from topofr_cli.data.synthetic_render import Identity, draw_identity, encode_photos, render_pixels
from topofr_cli.data.workers import clamp_workers
from topofr_cli.errors import TopofrError
from topofr_cli.progress import Progress, resolve_progress, stage

BIN_NAME = "synthetic_val.bin"
GENERATOR_VERSION = 1  # bump when the drawing changes, so old datasets can be told apart
ROLE_TRAIN, ROLE_HELDOUT, ROLE_PAIRS = 0, 1, 2
# below this many photos a worker pool costs more to start than it saves
_POOL_MIN_IMAGES = 2000


class PairScore(Protocol):
    """What a baseline reports about a `.bin` (an `evaluation.protocol.VerificationResult` is one)."""

    accuracy_mean: float
    accuracy_std: float


@dataclass
class SyntheticReport:
    """What `generate_synthetic` wrote and, when a baseline was given, how hard it is for raw pixels."""

    out_dir: Path
    bin_path: Path
    num_images: int
    num_classes: int
    heldout_identities: int
    pairs: int
    _: KW_ONLY  # at most six fields by position
    pixel_baseline: PairScore | None
    seconds: float

    @property
    def pixel_baseline_accuracy(self) -> float | None:
        return None if self.pixel_baseline is None else self.pixel_baseline.accuracy_mean


def stream(seed: int, role: int, index: int) -> np.random.Generator:
    """The random stream of one identity (or of the pair draw): independent of every other."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(role, index))))


def identity_parameters(seed: int, role: int, index: int) -> Identity:
    """The persistent parameters of training (role 0) or held-out (role 1) identity `index`."""
    return draw_identity(stream(seed, role, index))


def render_identity(job: tuple[int, int, int, int, float, int]) -> list[bytes]:
    """JPEG photos of one identity; `job` = (seed, role, index, count, difficulty, max_quality)."""
    seed, role, index, count, difficulty, max_quality = job
    rng = stream(seed, role, index)
    identity = draw_identity(rng)
    nuisance = draw_nuisance(rng, count, difficulty, max_quality)
    return encode_photos(render_pixels(identity, nuisance), nuisance)


def draw_pairs(
    rng: np.random.Generator, identities: int, per_identity: int, pairs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LFW-like pair list: (first [P, 2], second [P, 2]) as (identity, photo), issame [P].

    Exactly half the pairs are genuine, and each contiguous fold of the 10-fold protocol gets a
    shuffled half-and-half mix (docs/method.md §3.3 splits without shuffling).
    """
    issame = np.arange(pairs) % 2 == 0
    for fold in kfold_splits(pairs, NUM_FOLDS):
        issame[fold] = rng.permutation(issame[fold])
    first_id = rng.integers(0, identities, pairs)
    # impostor partner: any other identity; genuine partner: the same identity, another photo
    other_id = (first_id + rng.integers(1, identities, pairs)) % identities
    second_id = np.where(issame, first_id, other_id)
    first_photo = rng.integers(0, per_identity, pairs)
    other_photo = (first_photo + rng.integers(1, per_identity, pairs)) % per_identity
    second_photo = np.where(issame, other_photo, rng.integers(0, per_identity, pairs))
    return np.stack([first_id, first_photo], 1), np.stack([second_id, second_photo], 1), issame


def _check_arguments(
    out_dir: Path,
    identities: int,
    images_per_identity: int,
    heldout_identities: int,
    pairs: int,
    difficulty: float,
    quality: int,
) -> None:
    problems = []
    if identities < 1:
        problems.append(f"identities must be at least 1 (got {identities})")
    if images_per_identity < 2:
        problems.append(
            f"images_per_identity must be at least 2 for genuine pairs (got {images_per_identity})"
        )
    if heldout_identities < 2:
        problems.append(
            f"heldout_identities must be at least 2 for impostor pairs (got {heldout_identities})"
        )
    if pairs < 2 * NUM_FOLDS or pairs % 2:
        problems.append(f"pairs must be even and at least {2 * NUM_FOLDS} (got {pairs})")
    if not 0.0 <= difficulty <= 3.0:
        problems.append(f"difficulty must be in [0, 3] (got {difficulty})")
    if not 10 <= quality <= 100:
        problems.append(f"quality must be in [10, 100] (got {quality})")
    if problems:
        raise TopofrError(f"{out_dir}: " + "; ".join(problems))


def _results(jobs: list[tuple], workers: int) -> Iterator[list[bytes]]:
    """Rendered identities in job order, from a process pool when it pays off."""
    if workers <= 1:
        yield from map(render_identity, jobs)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(render_identity, jobs, chunksize=2)


def generate_synthetic(
    out_dir: str | Path,
    *,
    identities: int,
    images_per_identity: int,
    heldout_identities: int,
    pairs: int,
    seed: int,
    progress: Progress | bool | None = None,
    difficulty: float = 1.0,
    quality: int = 90,
    workers: int | None = None,
    overwrite: bool = False,
    baseline: Callable[[Path], PairScore] | None = None,
) -> SyntheticReport:
    """Write a packed set of `identities` × `images_per_identity` photos (labels 0..N−1, keys
    "id00012/img0003") with `synthetic_val.bin` inside it: `pairs` pairs of `heldout_identities`
    identities never seen in training. `quality` is the best JPEG quality (photos draw theirs
    below it); `difficulty` scales the nuisance. `baseline(bin_path)` (e.g.
    `evaluation.baseline.pixel_baseline`) scores the pairs; its accuracy goes into meta.json."""
    start_time = time.perf_counter()
    out_dir = Path(out_dir)
    _check_arguments(out_dir, identities, images_per_identity, heldout_identities, pairs, difficulty, quality)
    total_images = (identities + heldout_identities) * images_per_identity
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if total_images >= _POOL_MIN_IMAGES else 1
    else:
        workers, note = clamp_workers(workers, identities + heldout_identities, "--workers", "identities")
        if note:
            resolve_progress(progress).message("note", note)
    jobs = [(seed, ROLE_TRAIN, i, images_per_identity, difficulty, quality) for i in range(identities)]
    jobs += [
        (seed, ROLE_HELDOUT, j, images_per_identity, difficulty, quality) for j in range(heldout_identities)
    ]

    heldout_photos: list[list[bytes]] = []
    progress = resolve_progress(progress)
    with PackedWriter(out_dir, source=f"synthetic(seed={seed})", overwrite=overwrite) as writer:
        task = progress.start("synthetic faces", total_images)
        try:
            for job, photos in zip(jobs, _results(jobs, workers), strict=True):
                _, role, index = job[:3]
                if role == ROLE_TRAIN:
                    for k, encoded in enumerate(photos):
                        writer.add(encoded, index, f"id{index:05d}/img{k:04d}")
                else:
                    heldout_photos.append(photos)
                task.advance(len(photos))
        finally:
            task.close()

        with stage(progress, f"verification pairs ({pairs:,})"):
            first, second, issame = draw_pairs(
                stream(seed, ROLE_PAIRS, 0), heldout_identities, images_per_identity, pairs
            )
            images = []
            for (id_a, photo_a), (id_b, photo_b) in zip(first, second, strict=True):
                images += [heldout_photos[id_a][photo_a], heldout_photos[id_b][photo_b]]
            write_bin(writer.tmp_dir / BIN_NAME, images, issame)
        score = None
        if baseline is not None:
            with stage(progress, "raw-pixel baseline"):
                score = baseline(writer.tmp_dir / BIN_NAME)
        settings = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "identities": identities,
            "images_per_identity": images_per_identity,
            "heldout_identities": heldout_identities,
            "pairs": pairs,
            "difficulty": difficulty,
            "quality": quality,
        }
        if score is not None:
            settings.update(
                pixel_baseline_accuracy=score.accuracy_mean, pixel_baseline_accuracy_std=score.accuracy_std
            )
        final_dir = writer.finish(
            extra_meta={"num_classes": identities, "verification_bins": [BIN_NAME], "synthetic": settings}
        )
    return SyntheticReport(
        out_dir=final_dir,
        bin_path=final_dir / BIN_NAME,
        num_images=identities * images_per_identity,
        num_classes=identities,
        heldout_identities=heldout_identities,
        pairs=pairs,
        pixel_baseline=score,
        seconds=time.perf_counter() - start_time,
    )
