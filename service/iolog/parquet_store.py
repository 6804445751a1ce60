"""The embedded log store: a Hive-partitioned Parquet dataset that pandas, polars and DuckDB read.

<root>/predictions/model=<m>/version=<v>/date=<YYYY-MM-DD>/part-<segment>.parquet
<root>/rejected/date=<d>/part-<segment>.parquet
<root>/feedback/model=<m>/date=<d>/part-<segment>.parquet

Files are named after the spool segment they came from, and written by rename, so delivering a
segment twice (crash between write and spool cleanup) rewrites the same files: no duplicates.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, Frame
from service.iolog.schema import (
    REJECTED_SCHEMA,
    TS,
    BatchSource,
    conform_feedback,
    feedback_table,
    group_frames,
    predictions_table,
    rejected_table,
    with_model,
)


class CorruptLogFile(Exception):
    """A file of the Parquet log store cannot be read; its path is in the message."""


def _write(table: pa.Table, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{name}.parquet"
    tmp = directory / f".part-{name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


class ParquetStore:
    content_errors: tuple[type[Exception], ...] = ()  # pyarrow's are ValueError/TypeError

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ping(self) -> bool:
        """Can a file be written (and fsynced) in the store now? Not on a full or read-only disk."""
        probe = self.root / f".ping-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError:
            with contextlib.suppress(OSError):
                probe.unlink()
            return False
        return True

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
    def prediction_batches(
        self,
        model: str,
        version: int | None,
        since: datetime | None,
        until: datetime | None,
        columns: list[str] | None = None,
        batch_rows: int = 65_536,
    ) -> list[BatchSource]:
        """One source per version: only the window's model=/version=/date= directories are
        opened, each file column-projected and filtered on ``received_at`` as it is read."""
        first, last = (since.date() if since else None), (until.date() if until else None)
        out = []
        for v, files in self.prediction_files(model, version, first, last).items():
            if not files:
                continue
            stored = pa.unify_schemas([_file_schema(f) for f in files])
            schema = with_model(stored.empty_table(), model, v).schema
            if columns is not None:
                schema = pa.schema([f for f in schema if f.name in columns])
            wanted = None if columns is None else [c for c in stored.names if c in columns]
            batches = _batches(files, stored, wanted, _received(since, until), batch_rows)
            out.append(BatchSource(schema, _tagged(batches, model, v)))
        return out

    def feedback_batches(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Every label of ``model``, streamed; a label's day says nothing of its prediction's,
        so the window cannot prune them."""
        for path in self.feedback_files(model):
            try:
                for batch in pq.ParquetFile(path).iter_batches(65_536):
                    # files written before label sources read as source "unknown"
                    yield from conform_feedback(pa.Table.from_batches([batch])).to_batches()
            except (OSError, pa.ArrowException) as exc:
                raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc

    def rejected_rows(self, since: datetime | None, until: datetime | None) -> pa.Table:
        first, last = (since.date() if since else None), (until.date() if until else None)
        tables = [_read(f) for f in self.rejected_files(first, last)]
        return pa.concat_tables(tables) if tables else REJECTED_SCHEMA.empty_table()

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


def _received(since: datetime | None, until: datetime | None) -> ds.Expression | None:
    where = None
    if since is not None:
        where = ds.field("received_at") >= pa.scalar(since, TS)
    if until is not None:
        upper = ds.field("received_at") < pa.scalar(until, TS)
        where = upper if where is None else where & upper
    return where


def _batches(
    files: list[Path],
    schema: pa.Schema,
    columns: list[str] | None,
    where: ds.Expression | None,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    for path in files:  # one dataset per file, so an unreadable one is named
        try:
            dataset = ds.dataset(path, format="parquet", schema=schema)
            for batch in dataset.to_batches(columns=columns, filter=where, batch_size=batch_rows):
                if batch.num_rows:
                    yield batch
        except (OSError, pa.ArrowException) as exc:
            raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def _tagged(
    batches: Iterator[pa.RecordBatch], model: str, version: int
) -> Iterator[pa.RecordBatch]:
    # A function, not a generator expression in the loop: that would see the loop's last version.
    for batch in batches:
        yield with_model(batch, model, version)


def _file_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def _read(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc
