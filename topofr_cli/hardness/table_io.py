"""Write a `HardnessTable` as `sds.parquet` and `sds.csv`, ranked by SDS, in bounded memory.

Rows are produced in slices of the ranking, so only one slice of source keys (Python strings)
exists at a time, however many images the dataset holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from topofr_cli.artifacts.atomic import StagedDir
from topofr_cli.artifacts.outputs import REPORT, check_kind
from topofr_cli.data.dataset import FaceDataset
from topofr_cli.hardness.ranking import HardnessTable

PARQUET_NAME = "sds.parquet"
CSV_NAME = "sds.csv"
ROWS_PER_SLICE = 65536

COLUMNS = (
    "rank",
    "index",
    "key",
    "label",
    "predicted",
    "p_predicted",
    "p_gt",
    "entropy",
    "cosine_gap",
    "runner_up",
    "gum_input",
    "gamma",
    "w1",
    "w2",
    "sds",
)

SCHEMA = pa.schema(
    [
        ("rank", pa.int64()),
        ("index", pa.int64()),
        ("key", pa.string()),
        ("label", pa.int64()),
        ("predicted", pa.int64()),
        ("p_predicted", pa.float32()),
        ("p_gt", pa.float32()),
        ("entropy", pa.float32()),
        ("cosine_gap", pa.float32()),
        ("runner_up", pa.int64()),
        ("gum_input", pa.float64()),
        ("gamma", pa.float64()),
        ("w1", pa.float64()),
        ("w2", pa.float64()),
        ("sds", pa.float64()),
    ]
)


def ranked_slices(
    table: HardnessTable, dataset: FaceDataset, rows_per_slice: int = ROWS_PER_SLICE
) -> Iterator[pa.RecordBatch]:
    """Record batches of the table in SDS order (highest first)."""
    order = table.ranking()
    for start in range(0, len(order), rows_per_slice):
        index = order[start : start + rows_per_slice]
        columns = {
            "rank": np.arange(start + 1, start + 1 + len(index), dtype=np.int64),
            "index": index.astype(np.int64),
            "key": [dataset.source_key(int(i)) for i in index],
            "label": table.labels[index],
            "predicted": table.predicted[index],
            "p_predicted": table.p_predicted[index],
            "p_gt": table.p_true[index],
            "entropy": table.entropy[index],
            "cosine_gap": table.cosine_gap[index],
            "runner_up": table.runner_up[index],
            "gum_input": table.gum_input[index],
            "gamma": table.gamma[index],
            "w1": table.w1[index],
            "w2": table.w2[index],
            "sds": table.sds[index],
        }
        yield pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def write_table(table: HardnessTable, dataset: FaceDataset, directory: Path) -> tuple[Path, Path]:
    """Write `sds.parquet` and `sds.csv` into `directory` (one row per image, ranked)."""
    parquet_path, csv_path = directory / PARQUET_NAME, directory / CSV_NAME
    with pq.ParquetWriter(parquet_path, SCHEMA) as parquet, pacsv.CSVWriter(csv_path, SCHEMA) as csv:
        for batch in ranked_slices(table, dataset):
            parquet.write_batch(batch)
            csv.write_batch(batch)
    return parquet_path, csv_path


def staged_directory(out_dir: Path) -> StagedDir:
    """A staged sibling of `out_dir` whose files, on success, each replace their namesake in `out_dir`.

    Files already in `out_dir` that this run does not write are left alone (the REPORT policy, which
    the command applied, with its --overwrite, before the work started).
    """
    check_kind(out_dir, REPORT)
    return StagedDir(out_dir, merge=True)
