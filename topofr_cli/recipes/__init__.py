"""The training recipes installed with the package, addressable by name (`topofr train quickstart`).

A recipe argument is a YAML file when one exists at that path; otherwise a bare name (`quickstart`),
a file name (`quickstart.yaml`) or the checkout-era path (`recipes/quickstart.yaml`) names the
packaged recipe. Paths inside a recipe (`data.path`, `train.output`) stay relative to the current
directory, so a packaged recipe run from an empty folder writes its data and run there.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from topofr_cli.errors import TopofrError

PACKAGED_DIR = Path(__file__).resolve().parent


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with the package, sorted."""
    return sorted(path.stem for path in PACKAGED_DIR.glob("*.yaml"))


def _packaged_name(text: str) -> str | None:
    """The packaged recipe a non-existent path can mean: `NAME`, `NAME.yaml` or `recipes/NAME.yaml`."""
    path = Path(text)
    if path.parent not in (Path("."), Path("recipes")) or path.suffix not in ("", ".yaml"):
        return None
    return path.stem if (PACKAGED_DIR / f"{path.stem}.yaml").is_file() else None


def resolve_recipe(text: str | Path) -> Path:
    """The YAML file a recipe argument stands for: an existing file, else a packaged recipe."""
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():
        kind = "a directory" if path.is_dir() else "a device or other special file"
        raise TopofrError(f"{path}: a recipe must be a YAML file, not {kind}")
    name = _packaged_name(str(text))
    if name is None:
        close = difflib.get_close_matches(path.stem, packaged_recipes(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise TopofrError(
            f"{path}: recipe file not found ({hint}packaged recipes: {', '.join(packaged_recipes())})"
        )
    return PACKAGED_DIR / f"{name}.yaml"
