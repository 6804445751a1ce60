"""The embedded log store: a Hive-partitioned Parquet dataset that pandas, polars and DuckDB read.

<root>/predictions/model=<m>/version=<v>/date=<YYYY-MM-DD>/part-<segment>.parquet
<root>/rejected/date=<d>/part-<segment>.parquet
<root>/feedback/model=<m>/date=<d>/part-<segment>.parquet

Files are named after the spool segment they came from, and written by rename, so delivering a
segment twice (crash between write and spool cleanup) rewrites the same files: no duplicates.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, Frame
from service.iolog.schema import feedback_table, group_frames, predictions_table, rejected_table


def _write(table: pa.Table, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{name}.parquet"
    tmp = directory / f".part-{name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


class ParquetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def deliver(self, frames: list[Frame], segment_id: str) -> dict[str, int]:
        preds, rejected, feedback = group_frames(frames)
        counts = {PREDICTIONS: 0, REJECTED: 0, FEEDBACK: 0}
        for (model, version, d), group in preds.items():
            table = predictions_table(group)
            path = self.root / PREDICTIONS / f"model={model}" / f"version={version}" / f"date={d}"
            _write(table, path, segment_id)
            counts[PREDICTIONS] += table.num_rows
        for d, group in rejected.items():
            table = rejected_table(group)
            _write(table, self.root / REJECTED / f"date={d}", segment_id)
            counts[REJECTED] += table.num_rows
        for (model, d), group in feedback.items():
            table = feedback_table(group)
            _write(table, self.root / FEEDBACK / f"model={model}" / f"date={d}", segment_id)
            counts[FEEDBACK] += table.num_rows
        return counts

    def prune(self, older_than: datetime) -> dict[str, int]:
        """Whole days before ``older_than``'s date go, so up to one day more is kept."""
        from service.iolog.retention import prune_parquet  # here: retention imports the stores

        return {"partitions": prune_parquet(self.root, older_than.astimezone(UTC).date())}

    # -- reading -----------------------------------------------------------------------------
    def prediction_files(
        self, model: str, version: int | None, first: date | None, last: date | None
    ) -> dict[int, list[Path]]:
        base = self.root / PREDICTIONS / f"model={model}"
        out: dict[int, list[Path]] = {}
        if not base.is_dir():
            return out
        for vdir in sorted(base.glob("version=*")):
            v = int(vdir.name.split("=", 1)[1])
            if version is not None and v != version:
                continue
            out[v] = [
                f for d in _dates(vdir, first, last) for f in sorted(d.glob("part-*.parquet"))
            ]
        return out

    def feedback_files(self, model: str) -> list[Path]:
        base = self.root / FEEDBACK / f"model={model}"
        return sorted(base.glob("date=*/part-*.parquet"))

    def rejected_files(self, first: date | None, last: date | None) -> list[Path]:
        base = self.root / REJECTED
        if not base.is_dir():
            return []
        return [f for d in _dates(base, first, last) for f in sorted(d.glob("part-*.parquet"))]


def _dates(parent: Path, first: date | None, last: date | None) -> list[Path]:
    out = []
    for d in sorted(parent.glob("date=*")):
        day = date.fromisoformat(d.name.split("=", 1)[1])
        if (first is None or day >= first) and (last is None or day <= last):
            out.append(d)
    return out
