"""What is fuzzed: for each reader, a valid seed written by real code and a function that mutates a
copy of it and reads it the way the commands do (open, then touch every record).

Each `Target.run(case_dir, rng)` raises whatever the reader raises; the runner classifies it.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fuzz import targets_hostile as hostile
from fuzz.mutate import INTERESTING_INTS, INTERESTING_TEXT, mutate_bytes, mutate_text
from topofr_cli.recipes import PACKAGED_DIR

READ_AT_MOST = 32  # records touched per input: enough to reach every record of the small seeds


def _image(seed: int, size: int = 16, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _mutate_file(path: Path, rng: np.random.Generator, text: bool = False) -> None:
    data = path.read_bytes()
    path.write_bytes(
        mutate_text(data.decode("utf-8", "surrogateescape"), rng) if text else mutate_bytes(data, rng)
    )


# -- RecordIO -------------------------------------------------------------------------------------


def seed_recordio(folder: Path) -> None:
    from writers.rec_writer import write_rec  # the independent writer of the test suite

    images = [_image(i) for i in range(4)]
    write_rec(folder, images, [0, 1, 1, 0], header=True, num_classes=2)


def run_recordio(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.recordio import RecordIODataset

    name = _pick(rng, ["train.rec"] * 7 + ["train.idx"] * 2 + ["property"])
    _mutate_file(case / name, rng, text=name != "train.rec")
    dataset = RecordIODataset(case)
    for index in range(min(len(dataset), READ_AT_MOST)):
        dataset[index]
        dataset.source_key(index)


# -- verification .bin ----------------------------------------------------------------------------


def seed_bin(folder: Path) -> None:
    from topofr_cli.data.bins import write_bin

    images = [_image(i) for i in range(4)]
    write_bin(folder / "new.bin", images, [True, False])
    # the layout of insightface's Python-2 era files: protocol 2, encoded images in uint8 arrays
    arrays = [np.frombuffer(image, dtype=np.uint8) for image in images]
    (folder / "old.bin").write_bytes(pickle.dumps((arrays, np.array([True, False])), protocol=2))
    (folder / "pixels.bin").write_bytes(pickle.dumps(([np.zeros((8, 8, 3), np.uint8)] * 2, [1]), protocol=4))


def run_bin(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.bins import read_bin
    from topofr_cli.data.images import decode_image

    path = case / _pick(rng, ["new.bin", "old.bin", "pixels.bin"])
    _mutate_file(path, rng)
    pairs = read_bin(path)
    for image in pairs.images[:READ_AT_MOST]:
        decode_image(image)


# -- packed ---------------------------------------------------------------------------------------


def seed_packed(folder: Path) -> None:
    from topofr_cli.data.packed import PackedWriter

    with PackedWriter(folder / "set", source="fuzz seed", shard_bytes=1500) as writer:
        for i in range(5):
            writer.add(_image(i), i % 3, f"id{i % 3}/img{i}.jpg")
        writer.finish({"num_classes": 3})


def run_packed(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data import open_dataset

    folder = case / "set"
    name = _pick(
        rng, ["meta.json"] * 3 + ["index.parquet"] * 4 + ["images-00000.shard"] * 2 + ["images-00001.shard"]
    )
    _mutate_file(folder / name, rng, text=name == "meta.json")
    dataset = open_dataset(folder)
    for index in range(min(len(dataset), READ_AT_MOST)):
        dataset[index]
        dataset.source_key(index)


# -- single images --------------------------------------------------------------------------------

_IMAGE_SEEDS = [
    ("JPEG", "RGB"),
    ("PNG", "RGB"),
    ("PNG", "L"),
    ("PNG", "P"),
    ("BMP", "RGB"),
    ("GIF", "P"),
    ("WEBP", "RGB"),
    ("TIFF", "RGB"),
    ("PNG", "RGBA"),
    ("JPEG", "L"),
]


def seed_image(folder: Path) -> None:
    for number, (fmt, mode) in enumerate(_IMAGE_SEEDS):
        (folder / f"{number}.{fmt.lower()}").write_bytes(_image(number, fmt=fmt, mode=mode))


def run_image(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.images import decode_image, image_size

    path = _pick(rng, sorted(case.iterdir()))
    data = mutate_bytes(path.read_bytes(), rng)
    image_size(data)
    decode_image(data)


# -- image folders --------------------------------------------------------------------------------


def seed_folder(folder: Path) -> None:
    for identity in ("ann", "ben"):
        (folder / "faces" / identity).mkdir(parents=True)
        for number, fmt in enumerate(("JPEG", "PNG")):
            (folder / "faces" / identity / f"{number}.{fmt.lower()}").write_bytes(_image(number, fmt=fmt))


_ODD_NAMES = [
    b"caf\xe9.jpg",
    b"[x].jpg",
    b"\x1b[2J.jpg",
    b"new\nline.jpg",
    b"-rf.png",
    b" .jpg",
    b"a\x7f.png",
    "é.jpg".encode(),
    b"\xff\xfe",
    b"x.JPG",
]


def run_folder(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.data.folder import ImageFolderDataset
    from topofr_cli.data.packed import pack_dataset

    root = case / "faces"
    images = sorted(p for p in root.rglob("*") if p.is_file())
    victim = _pick(rng, images)
    op = int(rng.integers(0, 6))
    if op == 0:
        _mutate_file(victim, rng)
    elif op == 1:  # an odd file or identity name (bytes, so non-UTF-8 names are possible)
        target = victim if rng.random() < 0.6 else victim.parent
        name = _pick(rng, _ODD_NAMES)
        os.rename(os.fsencode(target), os.path.join(os.fsencode(target.parent), name))
    elif op == 2:  # a folder where an image was
        victim.unlink()
        victim.mkdir()
    elif op == 3:  # a symlink loop and a link leaving the tree
        os.symlink("..", victim.parent / "loop")
        os.symlink("/etc/hostname", victim.parent / "host.jpg")
    elif op == 4:
        victim.write_bytes(b"")
    else:
        shutil.rmtree(victim.parent)
    dataset = ImageFolderDataset(root)
    report = pack_dataset(
        dataset,
        case / "packed",
        source=str(root),
        verify=True,
        skip_bad=bool(rng.random() < 0.5),
        num_classes=dataset.num_classes,
        extra_meta={"identities": dataset.identities},
        progress=False,
    )
    from topofr_cli.data import open_dataset

    packed = open_dataset(report.out_dir)
    for index in range(min(len(packed), READ_AT_MOST)):
        packed.source_key(index)


# -- recipes --------------------------------------------------------------------------------------

_RECIPE_FILE = PACKAGED_DIR / "quickstart_topofr.yaml"
_OVERRIDE_KEYS = [
    "optim.lr",
    "data.batch_size",
    "train.log_every",
    "schedule.epochs",
    "train.max_bad_steps",
    "topofr.rsp.prob",
    "head.m2",
    "data.path",
    "model.network",
    "data.synthetic.pairs",
    "topofr.ptsa.alpha",
    "train.seed",
    "optim",
    "nope.key",
    "data.val_bins",
    "head.num_classes",
    "data.num_workers",
    "train.output",
]


def seed_recipe(folder: Path) -> None:
    shutil.copyfile(_RECIPE_FILE, folder / "recipe.yaml")


def run_recipe(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.config import load_recipe

    path = case / "recipe.yaml"
    if rng.random() < 0.8:
        _mutate_file(path, rng, text=True)
    overrides = []
    for _ in range(int(rng.integers(0, 3))):
        value = _pick(rng, INTERESTING_TEXT + [str(v) for v in INTERESTING_INTS])
        overrides.append(f"{_pick(rng, _OVERRIDE_KEYS)}={value}")
    load_recipe(path, overrides)


# -- checkpoints ----------------------------------------------------------------------------------


def _checkpoint_payload() -> dict:
    """What training writes (artifacts.checkpoint.Checkpoint), for a tiny MobileFaceNet."""
    from topofr_cli.artifacts.checkpoint import Checkpoint
    from topofr_cli.config import Recipe
    from topofr_cli.models import create_backbone

    torch.manual_seed(0)
    recipe = Recipe()
    recipe.model.network, recipe.model.embedding_size = "mbf", 8
    return Checkpoint(
        network="mbf",
        embedding_size=8,
        num_classes=3,
        backbone=create_backbone("mbf", 8).state_dict(),
        classifier=torch.randn(3, 8),
        step=1,
        epoch=0,
        recipe=recipe,
    ).to_payload()


def _save_checkpoint(payload: dict, path: Path) -> None:
    """The bytes Checkpoint.write produces (torch.save of its payload), for payloads it would refuse to build."""
    torch.save(payload, path)


def seed_checkpoint(folder: Path) -> None:
    from topofr_cli.artifacts.checkpoint import Checkpoint

    payload = _checkpoint_payload()
    Checkpoint.from_payload(payload, folder / "step_00000001.pt").write(folder / "step_00000001.pt")
    torch.save(payload["backbone"], folder / "backbone.pt")  # an insightface-style bare state dict


_SEMANTIC_VALUES = [
    0,
    -1,
    2**40,
    10**30,
    "r50",
    "mbf",
    "nope",
    None,
    1.5,
    float("nan"),
    [],
    {},
    "8",
    torch.zeros(0),
    torch.zeros(2, 2),
    True,
]


def _mutate_payload(payload: dict, rng: np.random.Generator) -> None:
    """Change one field the loader interprets: model info, classifier, recipe, format, or one tensor."""
    op = int(rng.integers(0, 5))
    value = _pick(rng, _SEMANTIC_VALUES)
    if op == 0:
        payload["model"][_pick(rng, ["network", "embedding_size", "num_classes"])] = value
    elif op == 1:
        payload[_pick(rng, ["classifier", "format", "step", "recipe", "backbone", "model"])] = value
    elif op == 2:
        key = _pick(rng, sorted(payload["backbone"]))
        payload["backbone"][key] = _pick(
            rng, [torch.zeros(3), torch.zeros(1, 1, 1, 1), torch.full((2,), float("nan"))]
        )
    elif op == 3:
        key = _pick(rng, sorted(payload["backbone"]))
        payload["backbone"][f"module.{key}" if rng.random() < 0.5 else "extra.weight"] = payload[
            "backbone"
        ].pop(key)
    else:
        section = _pick(rng, sorted(payload["recipe"]))
        payload["recipe"][section] = value


def run_checkpoint(case: Path, rng: np.random.Generator) -> None:
    from topofr_cli.evaluation.model_io import load_model

    path = case / _pick(rng, ["step_00000001.pt"] * 3 + ["backbone.pt"])
    if rng.random() < 0.5:
        _mutate_file(path, rng)
    else:
        payload = torch.load(path, weights_only=True)
        if "backbone" in payload:
            _mutate_payload(payload, rng)
        else:
            key = _pick(rng, sorted(payload))
            payload[key] = _pick(rng, [torch.zeros(3), torch.zeros(0), "x", 1])
        _save_checkpoint(payload, path)
    loaded = load_model(path)
    with torch.no_grad():
        loaded.backbone(torch.zeros(1, 3, 112, 112))


@dataclass(frozen=True)
class Target:
    name: str
    seed: Callable[[Path], None]
    run: Callable[[Path, np.random.Generator], None]


TARGETS = {
    t.name: t
    for t in [
        Target("recordio", seed_recordio, run_recordio),
        Target("bin", seed_bin, run_bin),
        Target("packed", seed_packed, run_packed),
        Target("image", seed_image, run_image),
        Target("folder", seed_folder, run_folder),
        Target("recipe", seed_recipe, run_recipe),
        Target("checkpoint", seed_checkpoint, run_checkpoint),
        # issue 19: inputs built with intent (fuzz/targets_hostile.py)
        Target("bin_dtype", hostile.seed_bin_dtype, hostile.run_bin_dtype),
        Target("bin_memo", hostile.seed_bin_dtype, hostile.run_bin_memo),
        Target("image_modes", hostile.seed_bin_dtype, hostile.run_image_modes),
        Target("nonfinite_model", seed_checkpoint, hostile.run_nonfinite_model),
        Target("write_limit", seed_folder, hostile.run_write_limit),
        Target("landmarks", hostile.seed_bin_dtype, hostile.run_landmarks),
        Target("pairs_csv", hostile.seed_pairs_csv, hostile.run_pairs_csv),
    ]
}

__all__ = ["TARGETS", "Target"]
