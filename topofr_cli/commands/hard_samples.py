"""`topofr hard-samples` as one call: rank a dataset's images by structure damage score.

import topofr_cli as tf
result = tf.hard_samples("runs/q/checkpoints/step_00000092.pt", "data/synthetic", out="hard")
result.table.ranking()[:10]          # the ten highest-SDS images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topofr_cli.artifacts.outputs import (
    DATASET,
    REPORT,
    check_not_input,
    check_output,
    default_output,
    provenance,
)
from topofr_cli.commands.common import claims, clamped_workers, is_fresh, mark, open_data, resolve_model
from topofr_cli.commands.hard_samples_report import SUMMARY_JSON, summary, write_report
from topofr_cli.progress import Progress, resolve_progress, stage

if TYPE_CHECKING:
    from topofr_cli.data.dataset import FaceDataset
    from topofr_cli.hardness.clean import CleanReport
    from topofr_cli.hardness.ranking import HardnessTable


@dataclass
class HardSamplesResult:
    """The ranking (`table`, per image), the dataset it ranks, what was written; `to_json()` is `--json`."""

    model: Path
    data: Path
    table: HardnessTable
    dataset: FaceDataset
    out: Path
    provenance: dict[str, Any]
    top: int
    clean: CleanReport | None = None

    def top_rows(self) -> list[dict[str, Any]]:
        """The `top` highest-SDS images, one dict each (rank from 1)."""
        table = self.table
        return [
            {
                "rank": rank,
                "index": int(index),
                "key": self.dataset.source_key(int(index)),
                "label": int(table.labels[index]),
                "predicted": int(table.predicted[index]),
                "p_gt": float(table.p_true[index]),
                "entropy": float(table.entropy[index]),
                "gamma": float(table.gamma[index]),
                "sds": float(table.sds[index]),
            }
            for rank, index in enumerate(table.ranking()[: self.top], start=1)
        ]

    def to_json(self) -> dict[str, Any]:
        result = {**summary(self.table, self.provenance, self.data), "out": self.out, "top": self.top_rows()}
        if self.clean is not None:
            result["clean"] = {
                "path": self.clean.path,
                "kept": self.clean.kept,
                "dropped": self.clean.dropped,
            }
        return result


def hard_samples(
    model: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    mode: str = "noise",
    top: int = 20,
    gum_scope: str = "dataset",
    batch_size: int = 256,
    device: str = "auto",
    workers: int = 2,
    typical: int = 3,
    write_clean: str | Path | None = None,
    drop_top: int | None = None,
    drop_above: float | None = None,
    overwrite: bool = False,
    detector: str | None = None,
    figure_format: str = "png",
    progress: Progress | bool | None = None,
) -> HardSamplesResult:
    """Score every image of `data` with a training checkpoint `model` (file or run folder), write the
    report to `out` (sds.parquet, sds.csv, figures, summary.json) and, with `write_clean`, a packed copy
    of the dataset without the `drop_top` highest-SDS images (or those with SDS above `drop_above`)."""
    from topofr_cli.devices import resolve_device
    from topofr_cli.evaluation.model_io import load_model
    from topofr_cli.hardness.clean import check_clean_options, verification_bins_to_copy
    from topofr_cli.hardness.ranking import check_inputs, score_dataset
    from topofr_cli.hardness.table_io import CSV_NAME, PARQUET_NAME
    from topofr_cli.plots.style import check_format

    progress = resolve_progress(progress)
    check_format(figure_format)
    torch_device = resolve_device(device)
    workers = clamped_workers(workers, progress)
    model, data = resolve_model(model, progress), Path(data)
    out = Path(out) if out is not None else default_output("hard-samples", model)
    clean_dir = Path(write_clean) if write_clean is not None else None

    def check() -> None:
        check_not_input([clean_dir] if clean_dir is not None else [], [model, data, out])
        check_clean_options(clean_dir, drop_top=drop_top, drop_above=drop_above, overwrite=overwrite)
        results = [PARQUET_NAME, CSV_NAME, SUMMARY_JSON]
        check_output(out, REPORT, overwrite=overwrite, results=results, inputs=[model, data, clean_dir])
        if clean_dir is not None:
            check_output(clean_dir, DATASET, overwrite=overwrite, inputs=[model, data, out])

    check()
    with claims([out, clean_dir]):
        check()  # again, now that no other command can write them
        loaded = load_model(model)
        dataset = open_data(data, detector, workers=max(1, workers), progress=progress)
        check_inputs(loaded, dataset, str(model), str(data))
        if clean_dir is not None:
            verification_bins_to_copy(dataset)  # refuse unsafe names in meta.json before any output
        table = score_dataset(
            loaded,
            dataset,
            batch_size=batch_size,
            gum_scope=gum_scope,
            device=torch_device,
            num_workers=workers,
            mode=mode,
            progress=progress,
        )
        source = provenance(model, step=loaded.step, network=loaded.network, flip=False)
        result = HardSamplesResult(model, data, table, dataset, out, source, top)
        _write(result, typical, figure_format, progress)
        if clean_dir is not None:
            from topofr_cli.hardness.clean import write_clean_dataset

            result.clean = write_clean_dataset(
                dataset,
                table,
                clean_dir,
                drop_top=drop_top,
                drop_above=drop_above,
                overwrite=overwrite,
                progress=progress,
            )
    return result


def _write(result: HardSamplesResult, typical: int, figure_format: str, progress: Progress) -> None:
    """The report (ranking, figures, summary.json) into `result.out`, marked as topofr's if new."""
    fresh = is_fresh(result.out)
    with stage(progress, "writing the ranking and figures"):
        write_report(
            result.table,
            result.dataset,
            result.out,
            provenance=result.provenance,
            data_path=result.data,
            top=result.top,
            typical=typical,
            figure_format=figure_format,
        )
    mark(result.out, "hard-samples", fresh=fresh)
