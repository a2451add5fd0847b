"""The output policy every command follows: where its output goes and what happens when it exists.

One function, `check_output`, applies a command's `OutputPolicy` before any work starts, so a
refusal costs nothing and leaves nothing behind. The writing itself is atomic (`atomic.py`).

| command                              | output            | when it exists                               |
|--------------------------------------|-------------------|----------------------------------------------|
| prepare pack / recordio / synthetic, | folder (DATASET)  | refused; `--overwrite` replaces it whole     |
| hard-samples --write-clean           |                   |                                              |
| prepare bin                          | file (BIN)        | refused; `--overwrite` replaces it           |
| train                                | run folder (RUN)  | refused unless empty; `--resume` continues   |
|                                      |                   | it, `--overwrite` empties it first           |
| analyze-topology --out               | folder (own)      | refused; `--overwrite` replaces an earlier   |
|                                      |                   | analysis (never a folder of anything else)   |
| hard-samples --out, eval --out       | folder (REPORT)   | refused when a result it writes is there;    |
|                                      |                   | `--overwrite` replaces those files, others   |
|                                      |                   | stay                                         |
| eval --embeddings, export OUT        | file (FILE)       | replaced                                     |

What `--overwrite` may replace, for every command alike: only what topofr wrote (a folder holding
the `.topofr-output` marker every command leaves in the folders it writes, or topofr's own layout: a
packed dataset's `meta.json`, a run folder's `checkpoints/` or `train.log`, an earlier analysis), and
never one of the command's inputs, a folder holding one, or anything inside one: `check_output`'s
`inputs` are refused as outputs whatever the options. One writer at a time: `claim_output(path)`
(`output_lock.py`) holds an OS lock on the output from the check to the last write, so a second
command writing the same output gets one line instead of mixing its files with the first one's.

Default locations (`default_output`): beside the model's run when the model is a checkpoint of one
(`RUN/eval/step_N/` for `RUN/checkpoints/step_N.pt`; `RUN/hard-samples/step_N/`;
`RUN/analyze-topology/` for the run folder itself, `RUN/analyze-topology/step_N/` for one of its
checkpoints), otherwise `topofr-<command>/<model file stem>/` in the working folder. Two runs'
same-named checkpoints therefore never share a folder, and a clash elsewhere is refused.

Every CSV/JSON summary a command writes carries `provenance(...)`: the model file, its step,
network, whether the mirror image was added, the command line and the topofr version.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Literal

from topofr_cli import __version__
from topofr_cli.artifacts.run_lock import LOCK_FILE as RUN_LOCK_FILE
from topofr_cli.errors import TopofrError

Existing = Literal["refuse", "replace", "merge", "replace_own"]


@dataclass(frozen=True)
class OutputPolicy:
    """What a command writes (`kind`) and what it does with an existing output (`existing`).

    `refuse`: an existing output is refused; `overwrite=True` (a command's `--overwrite`) replaces it.
    `replace`: replaced without asking. `merge` (a folder of results): refused when one of the files
    the command is about to write is there (any file, when it does not say which); `overwrite=True`
    replaces those files and leaves the others. `replace_own`: an empty folder is used; one `is_own`
    recognises as this command's earlier output is replaced with `overwrite=True`; anything else is
    refused even then (`foreign`), so `--overwrite` never deletes a folder the command did not write.
    The messages keep each command's wording; `{path}` is the output path.
    """

    kind: Literal["file", "dir"]
    existing: Existing
    empty_dir_is_absent: bool = False
    is_own: Callable[[Path], bool] | None = None
    not_a_dir: str = "{path}: exists and is not a directory"
    refused: str = "{path}: already exists (pass --overwrite to replace it)"
    _: KW_ONLY  # at most six fields by position
    foreign: str = "{path}: exists and was not written by this command; choose another --out"
    not_topofr: str = (
        "{path}: exists and was not written by topofr; --overwrite replaces only topofr's own "
        "outputs: choose another output or remove it yourself"
    )


DATASET = OutputPolicy("dir", "refuse")
BIN = OutputPolicy("file", "refuse")
RUN = OutputPolicy(
    "dir",
    "refuse",
    empty_dir_is_absent=True,
    not_a_dir="{path}: train.output exists and is not a directory",
    refused="{path}: run directory is not empty; pass --resume to continue that run or "
    "--overwrite to replace it",
)
REPORT = OutputPolicy(
    "dir",
    "merge",
    not_a_dir="{path}: --out must be a directory, and this is a file",
    refused="{path}: already exists (results of an earlier run; pass --overwrite to replace "
    "them or choose another --out)",
)
FILE = OutputPolicy("file", "replace")


MARKER = ".topofr-output"  # left in every folder a command writes: what `--overwrite` may replace
PACKED_FORMAT = "topofr-packed"  # data.packed's meta.json format, the layout of a packed dataset


def write_marker(folder: str | Path, command: str) -> None:
    """Mark `folder` as written by topofr's `command` (idempotent; the folder must exist)."""
    from topofr_cli.artifacts.atomic import write_text  # numpy: loaded by commands that write, not --help

    write_text(Path(folder) / MARKER, json.dumps({"command": command, "topofr_version": __version__}) + "\n")


def _json_field(path: Path, key: str) -> object:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def is_topofr_output(path: Path) -> bool:
    """Whether `path` is a folder topofr wrote: its marker, or a layout only topofr writes."""
    if path.is_symlink() or not path.is_dir():
        return False
    if (path / MARKER).is_file() or _json_field(path / "meta.json", "format") == PACKED_FORMAT:
        return True
    return any((path / name).exists() for name in (CHECKPOINT_FOLDER, "train.log", RUN_LOCK_FILE))


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_not_input(targets: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Refuse any output that is one of the command's inputs (or its other outputs), holds one, or lies
    inside one. Paths are compared after resolving links, so a link to the input is the input."""
    sources = [(Path(item), _resolved(item)) for item in inputs if item is not None]
    for target in targets:
        real = _resolved(target)
        for given, source in sources:
            if real == source:
                relation = "is"
            elif source.is_relative_to(real):
                relation = "holds"
            elif real.is_relative_to(source):
                relation = "lies inside"
            else:
                continue
            raise TopofrError(
                f"{target}: {relation} {given}, which this command reads (or writes elsewhere); "
                "choose an output apart from the command's inputs"
            )


def check_kind(path: Path, policy: OutputPolicy) -> None:
    """A folder output must not be an existing file."""
    if policy.kind == "dir" and path.exists() and not path.is_dir():
        raise TopofrError(policy.not_a_dir.format(path=path))


def check_output(
    path: str | Path,
    policy: OutputPolicy,
    *,
    overwrite: bool = False,
    results: Iterable[str] = (),
    inputs: Iterable[str | Path | None] = (),
) -> bool:
    """Raise TopofrError if `policy` forbids writing to `path`; True when something there is replaced.

    `results`: for a `merge` folder, the names of the files the command will write in it (those, not the
    folder, are what it replaces). `inputs`: the files and folders the command reads (`check_not_input`)."""
    path = Path(path)
    results = list(results)
    merged = policy.existing == "merge" and results
    check_not_input([path / name for name in results] if merged else [path], inputs)
    check_kind(path, policy)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir() and policy.empty_dir_is_absent and not any(path.iterdir()):
        return False
    if policy.existing == "replace":
        return True
    if policy.existing == "merge":
        names = list(results)
        clashes = (
            [path / name for name in names if (path / name).exists()]
            if names
            else ([path] if any(path.iterdir()) else [])
        )
        if clashes and not overwrite:
            raise TopofrError(policy.refused.format(path=clashes[0]))
        if clashes and not is_topofr_output(path):
            raise TopofrError(policy.not_topofr.format(path=path))
        return bool(clashes)
    if policy.existing == "replace_own":
        if not any(path.iterdir()):
            return True
        if policy.is_own is None or not (policy.is_own(path) or (path / MARKER).is_file()):
            raise TopofrError(policy.foreign.format(path=path))
    elif policy.kind == "dir" and overwrite and not is_topofr_output(path):
        raise TopofrError(policy.not_topofr.format(path=path))
    if overwrite:
        return True
    raise TopofrError(policy.refused.format(path=path))


CHECKPOINT_FOLDER = "checkpoints"  # artifacts.checkpoint.CHECKPOINT_DIR, without importing torch here


def run_of(model: Path) -> Path | None:
    """The run folder `model` belongs to: itself for a run folder, RUN for RUN/checkpoints/X.pt."""
    if model.is_dir():
        return model if (model / CHECKPOINT_FOLDER).is_dir() else None
    if model.parent.name == CHECKPOINT_FOLDER:
        return model.parent.parent
    return None


def model_label(path: str | Path) -> str:
    """A model's name for titles: the run folder of `RUN/checkpoints/step_*.pt`, else the file stem."""
    path = Path(path)
    if path.parent.name == CHECKPOINT_FOLDER and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


def default_output(command: str, model: Path) -> Path:
    """Where `command`'s results for `model` go when the user names no --out (see the module docstring)."""
    run = run_of(model)
    if run is None:
        return Path(f"topofr-{command}") / (model.name if model.is_dir() else model.stem)
    if model.is_dir():
        return run / command
    return run / command / model.stem


def command_line() -> str:
    """The command as the user typed it (program name, then its arguments), shell-quoted."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "topofr"
    if program == "__main__.py":  # `python -m topofr_cli …`: argv[0] is the package's __main__ file
        return shlex.join(["python", "-m", "topofr_cli", *sys.argv[1:]])
    return shlex.join([program, *sys.argv[1:]])


def provenance(model: Path | str, *, step: int | None, network: str | None, flip: bool | None) -> dict:
    """Which model produced a result and how: written into every summary a command leaves."""
    return {
        "model": str(model),
        "step": step,
        "network": network,
        "flip": flip,
        "command": command_line(),
        "topofr_version": __version__,
    }
