"""Reading the I/O log: everything acknowledged, whether still in the spool or already stored.

``open_predictions`` streams a window as Arrow record batches of one schema, so export, drift
and back-test hold one batch (plus 8 bytes a row for de-duplication and the labels' index) rather
than the window. Parquet files are chosen by their model=/version=/date= directories and read
column-projected and filtered by ``received_at``; PostgreSQL streams its COPY output in blocks.
``read_predictions`` is the same as one DataFrame, for small windows and notebooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, read_frames
from service.iolog.labels import Labels, SeenKeys, key_hashes, latest_labels
from service.iolog.parquet_store import ParquetStore
from service.iolog.postgres_store import PostgresStore
from service.iolog.schema import (
    REJECTED_SCHEMA,
    TS,
    feedback_table,
    group_frames,
    predictions_table,
    rejected_table,
)
from service.iolog.spool import spool_segments
from service.iolog.store import open_store
from service.settings import Settings

KEY = ["request_id", "row"]
_T = TypeVar("_T", pa.Table, pa.RecordBatch)
_EMPTY = pa.schema(  # an empty window still exports the log's fixed columns
    [("request_id", pa.string()), ("row", pa.int32()), ("received_at", TS),
     ("model", pa.string()), ("version", pa.int64()), ("sha256", pa.string()),
     ("endpoint", pa.string()), ("status", pa.int32()), ("latency_s", pa.float64()),
     ("prediction", pa.string()), ("metadata", pa.string())]
)  # fmt: skip
BATCH_ROWS = 65_536
LABEL = "label"


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _spool_frames(settings: Settings, table: str) -> list:  # type: ignore[type-arg]
    return [
        f
        for seg in spool_segments(settings.spool_dir)
        for f in read_frames(seg)
        if f.table == table
    ]


class CorruptLogFile(Exception):
    """A file of the Parquet log store cannot be read; its path is in the message."""


def _in_window(table: pa.Table, since: datetime | None, until: datetime | None) -> pa.Table:
    mask = None
    if since is not None:
        mask = pc.greater_equal(table.column("received_at"), pa.scalar(since, TS))
    if until is not None:
        upper = pc.less(table.column("received_at"), pa.scalar(until, TS))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(mask)


def _with_model(table: _T, model: str, version: int) -> _T:
    """Parquet files and spool frames lack ``model`` and ``version``: their directory says it."""
    n = table.num_rows
    at = min(3, table.num_columns)
    if "model" not in table.schema.names:
        table = table.add_column(at, "model", pa.array([model] * n, pa.string()))
    if "version" not in table.schema.names:
        table = table.add_column(at + 1, "version", pa.array([version] * n, pa.int64()))
    return table


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    """Columns in order of first appearance; a column text in one source and numeric in another
    (a feature PII-hashed in one version) is read as text."""
    fields: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            have = fields.get(f.name)
            if have is None:
                fields[f.name] = f.type
            elif have != f.type:
                fields[f.name] = pa.string()
    return pa.schema(list(fields.items()))


def _conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    n = batch.num_rows
    names = batch.schema.names
    arrays = []
    for f in schema:
        if f.name not in names:
            arrays.append(pa.nulls(n, f.type))
            continue
        col = batch.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- sources -----------------------------------------------------------------------------------
class _Source:
    """One stored part of the window: its schema, and its batches on demand."""

    def __init__(self, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
        self.schema, self.batches = schema, batches


def _parquet_sources(
    store: ParquetStore,
    model: str,
    version: int | None,
    since: datetime | None,
    until: datetime | None,
    columns: list[str] | None,
    batch_rows: int,
) -> list[_Source]:
    first, last = (since.date() if since else None), (until.date() if until else None)
    out = []
    # The directory names prune: only this model's (version's) days of the window are opened.
    for v, files in store.prediction_files(model, version, first, last).items():
        if not files:
            continue
        file_schema = pa.unify_schemas([_file_schema(f) for f in files])
        schema = _with_model(file_schema.empty_table(), model, v).schema
        if columns is not None:
            schema = pa.schema([f for f in schema if f.name in columns])
        batches = _parquet_batches(files, file_schema, model, v, since, until, columns, batch_rows)
        out.append(_Source(schema, batches))
    return out


def _postgres_source(
    store: PostgresStore,
    model: str,
    version: int | None,
    since: datetime | None,
    until: datetime | None,
    columns: list[str] | None,
    batch_rows: int,
) -> _Source:
    schema, batches = store.prediction_batches(model, version, since, until, columns, batch_rows)
    if not schema.names:
        return _Source(schema, batches)
    with_model = _with_model(schema.empty_table(), model, -1).schema
    if columns is not None:
        with_model = pa.schema([f for f in with_model if f.name in columns])
    return _Source(with_model, (_with_model(b, model, -1) for b in batches))


def _file_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def _parquet_batches(
    files: list[Path],
    schema: pa.Schema,
    model: str,
    version: int,
    since: datetime | None,
    until: datetime | None,
    columns: list[str] | None,
    batch_rows: int,
) -> Iterator[pa.RecordBatch]:
    where = None
    if since is not None:
        where = ds.field("received_at") >= pa.scalar(since, TS)
    if until is not None:
        upper = ds.field("received_at") < pa.scalar(until, TS)
        where = upper if where is None else where & upper
    wanted = None if columns is None else [c for c in schema.names if c in columns]
    for path in files:  # one dataset per file, so an unreadable one is named
        try:
            dataset = ds.dataset(path, format="parquet", schema=schema)
            for batch in dataset.to_batches(columns=wanted, filter=where, batch_size=batch_rows):
                if batch.num_rows:
                    yield _with_model(batch, model, version)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def _spool_predictions(
    settings: Settings,
    model: str,
    version: int | None,
    since: datetime | None,
    until: datetime | None,
) -> list[pa.Table]:
    preds, _, _ = group_frames(_spool_frames(settings, PREDICTIONS))
    out = []
    for (m, v, _d), frames in preds.items():
        if m == model and (version is None or v == version):
            table = _in_window(predictions_table(frames), since, until)
            if table.num_rows:
                out.append(_with_model(table, model, v))
    return out


def _feedback_batches(
    store: ParquetStore | PostgresStore,
    model: str,
    spool: list[pa.Table],
    since: datetime | None,
    until: datetime | None,
) -> Iterator[pa.RecordBatch | pa.Table]:
    """The labels of ``model``, store first, then the spool (newer): read order breaks ties.
    PostgreSQL sends only those of rows in the window; Parquet files are streamed whole."""
    if isinstance(store, PostgresStore):
        yield from store.feedback_batches(model, since, until)
    else:
        for path in store.feedback_files(model):
            try:
                yield from pq.ParquetFile(path).iter_batches(BATCH_ROWS)
            except (OSError, pa.ArrowException) as exc:
                raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc
    yield from spool


# -- the window --------------------------------------------------------------------------------
class PredictionStream:
    """A window of logged predictions as record batches of one ``schema``.

    Records still in the spool are included; a record both in the spool and in the store (it was
    delivered while we read) counts once. Rows come store first (by day and file), then the spool;
    order within the window is not otherwise sorted.
    """

    def __init__(
        self,
        schema: pa.Schema,
        sources: list[_Source],
        spool: list[pa.Table],
        labels: Labels | None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.schema = schema
        self._batch_rows = batch_rows
        self._sources, self._spool, self._labels = sources, spool, labels

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        seen = SeenKeys()
        # The spool first: a segment delivered and deleted between the two reads is then seen
        # in the store as a duplicate of what the spool gave, and dropped there.
        spool = [self._fresh(t, seen) for t in self._spool]
        for source in self._sources:
            for batch in source.batches:
                batch = self._fresh(batch, seen)
                if batch.num_rows:
                    yield batch
        for batch in spool:
            for start in range(0, batch.num_rows, self._batch_rows):
                yield batch.slice(start, self._batch_rows)

    def _fresh(self, batch: pa.RecordBatch | pa.Table, seen: SeenKeys) -> pa.RecordBatch:
        hashes = key_hashes(batch)
        mask = seen.fresh(hashes)
        if not mask.all():
            batch, hashes = batch.filter(pa.array(mask)), hashes[mask]
        out = _conform(batch, self.schema)
        if self._labels is not None:
            out = out.set_column(
                self.schema.get_field_index(LABEL), LABEL, self._labels.lookup(hashes)
            )
        return out


def open_predictions(
    settings: Settings,
    model: str,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    with_labels: bool = True,
    columns: list[str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> PredictionStream:
    """The window ``[since, until)`` of ``model`` (``version``), streamed.

    ``columns`` projects (``request_id`` and ``row`` are always read: they are the key).
    """
    since, until = _utc(since), _utc(until)
    wanted = None if columns is None else [*KEY, *(c for c in columns if c not in KEY)]
    spool = _spool_predictions(settings, model, version, since, until)
    if wanted is not None:
        spool = [t.select([c for c in t.column_names if c in wanted]) for t in spool]
    store = open_store(settings)
    if isinstance(store, PostgresStore):
        sources = [_postgres_source(store, model, version, since, until, wanted, batch_rows)]
    else:
        sources = _parquet_sources(store, model, version, since, until, wanted, batch_rows)
    schema = _unify([*(t.schema for t in spool), *(s.schema for s in sources)]) or _EMPTY
    labels = None
    if with_labels:
        fb_spool = _spool_feedback(settings, model)
        labels = latest_labels(_feedback_batches(store, model, fb_spool, since, until))
        schema = schema.append(pa.field(LABEL, pa.string()))
    return PredictionStream(schema, sources, spool, labels, batch_rows)


def _spool_feedback(settings: Settings, model: str) -> list[pa.Table]:
    _, _, fb = group_frames(_spool_frames(settings, FEEDBACK))
    return [feedback_table(frames) for (m, _d), frames in fb.items() if m == model]


def read_predictions(
    settings: Settings,
    model: str,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    with_labels: bool = True,
) -> pd.DataFrame:
    """The whole window as one DataFrame ordered by time, ``label`` joined: for small windows."""
    stream = open_predictions(settings, model, version, since, until, with_labels=with_labels)
    batches = list(stream)
    if not batches:
        return _empty_predictions(with_labels)
    df = pa.Table.from_batches(batches, stream.schema).to_pandas()
    df = df.sort_values(["received_at", "request_id", "row"], kind="stable")
    return df.reset_index(drop=True)


def _empty_predictions(with_labels: bool) -> pd.DataFrame:
    cols = ["request_id", "row", "received_at", "model", "version", "sha256", "endpoint",
            "status", "latency_s", "prediction", "metadata"]  # fmt: skip
    if with_labels:
        cols.append("label")
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df["received_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def read_rejected(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    since, until = _utc(since), _utc(until)
    _, rej, _ = group_frames(_spool_frames(settings, REJECTED))  # spool first, as above
    tables = [rejected_table(frames) for frames in rej.values()]
    store = open_store(settings)
    if isinstance(store, PostgresStore):
        stored = store.read_rejected(since, until)
        tables.append(pa.Table.from_pandas(stored, schema=REJECTED_SCHEMA, preserve_index=False))
    else:
        first, last = (since.date() if since else None), (until.date() if until else None)
        tables += [_read_parquet(f) for f in store.rejected_files(first, last)]
    df = (pa.concat_tables(tables) if tables else REJECTED_SCHEMA.empty_table()).to_pandas()
    df = df.drop_duplicates(["request_id", "received_at"], keep="first")
    if since is not None:
        df = df[df["received_at"] >= pd.Timestamp(since)]
    if until is not None:
        df = df[df["received_at"] < pd.Timestamp(until)]
    return df.sort_values("received_at").reset_index(drop=True)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc
