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
| analyze-topology --out               | folder (own)      | replaced if empty or an earlier analysis,    |
|                                      |                   | refused otherwise                            |
| hard-samples --out, eval --out       | folder (REPORT)   | merged: each file written replaces its       |
|                                      |                   | namesake, other files stay                   |
| eval --embeddings, export OUT        | file (FILE)       | replaced                                     |

Default locations are the commands' option defaults: `topofr-eval/<model file stem>` (eval),
`topology-analysis` (analyze-topology), `hard_samples` (hard-samples), `train.output` (train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from topofr_cli.errors import TopofrError

Existing = Literal["refuse", "replace", "merge", "replace_own"]


@dataclass(frozen=True)
class OutputPolicy:
    """What a command writes (`kind`) and what it does with an existing output (`existing`).

    `replace_own` replaces an empty folder or one `is_own` recognises as this command's earlier
    output. `overwrite=True` (a command's `--overwrite`) turns every refusal into a replacement.
    The messages keep each command's wording; `{path}` is the output path.
    """

    kind: Literal["file", "dir"]
    existing: Existing
    empty_dir_is_absent: bool = False
    is_own: Callable[[Path], bool] | None = None
    not_a_dir: str = "{path}: exists and is not a directory"
    refused: str = "{path}: already exists (pass --overwrite to replace it)"


DATASET = OutputPolicy("dir", "refuse")
BIN = OutputPolicy("file", "refuse")
RUN = OutputPolicy("dir", "refuse", empty_dir_is_absent=True,
                   not_a_dir="{path}: train.output exists and is not a directory",
                   refused="{path}: run directory is not empty; pass --resume to continue that run or "
                           "--overwrite to replace it")
REPORT = OutputPolicy("dir", "merge", not_a_dir="{path}: --out must be a directory, and this is a file")
FILE = OutputPolicy("file", "replace")


def check_kind(path: Path, policy: OutputPolicy) -> None:
    """A folder output must not be an existing file."""
    if policy.kind == "dir" and path.exists() and not path.is_dir():
        raise TopofrError(policy.not_a_dir.format(path=path))


def check_output(path: str | Path, policy: OutputPolicy, *, overwrite: bool = False) -> bool:
    """Raise TopofrError if `policy` forbids writing to `path`; True when something there is replaced."""
    path = Path(path)
    check_kind(path, policy)
    if not path.exists():
        return False
    if path.is_dir() and policy.empty_dir_is_absent and not any(path.iterdir()):
        return False
    if overwrite or policy.existing in ("replace", "merge"):
        return True
    if policy.existing == "replace_own" and (not any(path.iterdir()) or
                                             (policy.is_own is not None and policy.is_own(path))):
        return True
    raise TopofrError(policy.refused.format(path=path))
