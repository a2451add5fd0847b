"""Run monitoring: `metrics.csv` (one row per logged step) and TensorBoard scalars when installed."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from topofr_cli.artifacts.atomic import atomic_path
from topofr_cli.artifacts.run_dir import RunDir


def _open_tensorboard(log_dir: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class MetricsLog:
    """Append-only CSV with a fixed header; rows may leave columns empty (e.g. evaluation rows).

    On resume the rows logged after the checkpoint's step (by the interrupted run) are dropped so the
    file describes exactly one history.
    """

    def __init__(
        self,
        run_dir: str | Path,
        columns: Sequence[str],
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.columns = ["step", *[c for c in columns if c != "step"]]
        self.path = RunDir(Path(run_dir)).metrics
        self._handle = None
        self._writer: csv.DictWriter | None = None
        self._tensorboard = None
        if not enabled:
            return
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as handle:
                for row in csv.DictReader(handle):
                    try:
                        if int(row.get("step") or -1) <= resume_step:
                            kept.append(row)
                    except ValueError:
                        continue
            for row in kept:  # keep columns the earlier run had even if this run does not log them
                self.columns.extend(k for k in row if k not in self.columns)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self._handle = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, extrasaction="ignore")
        if tensorboard:
            self._tensorboard = _open_tensorboard(RunDir(Path(run_dir)).tensorboard)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled or self._writer is None:
            return
        unknown = [k for k in values if k not in self.columns]
        if unknown:
            raise KeyError(f"metrics columns not declared at start: {unknown}")
        self._writer.writerow({"step": step, **{k: _cell(v) for k, v in values.items()}})
        self._handle.flush()
        if self._tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
