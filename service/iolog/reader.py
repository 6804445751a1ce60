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
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from service.iolog.frames import FEEDBACK, PREDICTIONS, PRIMARY, REJECTED, read_frames
from service.iolog.labels import Labels, SeenKeys, key_hashes, latest_labels, row_keys
from service.iolog.parquet_store import CorruptLogFile
from service.iolog.schema import (
    FEEDBACK_SCHEMA,
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
from service.iolog.spool import spool_segments
from service.iolog.store import open_store
from service.settings import Settings

__all__ = [
    "CorruptLogFile",
    "PredictionStream",
    "open_predictions",
    "read_feedback",
    "read_predictions",
    "read_rejected",
]
KEY = ["request_id", "row", "role"]  # a shadow row shares request_id and row with its primary
ROLE = "role"
_EMPTY = pa.schema(  # an empty window still exports the log's fixed columns
    [("request_id", pa.string()), ("row", pa.int32()), ("received_at", TS),
     ("model", pa.string()), ("version", pa.int64()), ("sha256", pa.string()),
     ("endpoint", pa.string()), ("status", pa.int32()), ("latency_s", pa.float64()),
     ("prediction", pa.string()), ("metadata", pa.string()), ("role", pa.string())]
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


def _in_window(table: pa.Table, since: datetime | None, until: datetime | None) -> pa.Table:
    mask = None
    if since is not None:
        mask = pc.greater_equal(table.column("received_at"), pa.scalar(since, TS))
    if until is not None:
        upper = pc.less(table.column("received_at"), pa.scalar(until, TS))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(mask)


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
            # Rows logged before rollouts had roles were all served by the primary.
            arrays.append(
                pa.repeat(pa.scalar(PRIMARY, f.type), n) if f.name == ROLE else pa.nulls(n, f.type)
            )
            continue
        col = batch.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if f.name == ROLE and col.null_count:
            col = col.fill_null(PRIMARY)
        arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
                out.append(with_model(table, model, v))
    return out


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
        sources: list[BatchSource],
        spool: list[pa.Table],
        labels: Labels | None,
        batch_rows: int = BATCH_ROWS,
        *,
        store_unique: bool = False,
    ) -> None:
        self.schema = schema
        self._batch_rows = batch_rows
        self._sources, self._spool, self._labels = sources, spool, labels
        self._store_unique = store_unique

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        seen = SeenKeys()
        # The spool first: a segment delivered and deleted between the two reads is then seen
        # in the store as a duplicate of what the spool gave, and dropped there.
        spool = [self._fresh(t, seen) for t in self._spool]
        overlap = _SpoolOverlap(self._spool) if self._store_unique else None
        for source in self._sources:
            for batch in source.batches:
                if overlap is None:
                    batch = self._fresh(batch, seen)
                else:
                    batch = _conform(overlap.drop_spooled(batch), self.schema)
                if batch.num_rows:
                    yield batch
        for batch in spool:
            for start in range(0, batch.num_rows, self._batch_rows):
                yield batch.slice(start, self._batch_rows)

    def _fresh(self, batch: pa.RecordBatch | pa.Table, seen: SeenKeys) -> pa.RecordBatch:
        joined = key_hashes(batch)
        mask = seen.fresh(row_keys(batch, joined))
        if not mask.all():
            batch, joined = batch.filter(pa.array(mask)), joined[mask]
        out = _conform(batch, self.schema)
        if self._labels is not None:
            # Every role of a row holds the label sent for its (request_id, row).
            labels = self._labels.lookup(joined)
            out = out.set_column(self.schema.get_field_index(LABEL), LABEL, labels)
        return out


class _SpoolOverlap:
    """The spool's row keys, for a store the caller trusts to hold each record once
    (``store_unique``): only store rows received within the spool's time span are hashed."""

    def __init__(self, spool: list[pa.Table]) -> None:
        keys = [row_keys(t) for t in spool if t.num_rows]
        self._keys = np.sort(np.concatenate(keys)) if keys else None
        times = [t.column("received_at") for t in spool if t.num_rows]
        self._span = (
            None
            if not times
            else (min(pc.min(c).as_py() for c in times), max(pc.max(c).as_py() for c in times))
        )

    def drop_spooled(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._keys is None or self._span is None or "request_id" not in batch.schema.names:
            return batch  # read without keys: received before the spool's first row
        received = batch.column("received_at")
        near = pc.and_(
            pc.greater_equal(received, pa.scalar(self._span[0], TS)),
            pc.less_equal(received, pa.scalar(self._span[1], TS)),
        )
        rows = np.flatnonzero(near.to_numpy(zero_copy_only=False))
        if not len(rows):
            return batch
        hashes = row_keys(batch.take(pa.array(rows)))
        pos = np.minimum(np.searchsorted(self._keys, hashes), len(self._keys) - 1)
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[rows[self._keys[pos] == hashes]] = False
        return batch if keep.all() else batch.filter(pa.array(keep))


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
    store_unique: bool = False,
) -> PredictionStream:
    """The window ``[since, until)`` of ``model`` (``version``), streamed.

    ``columns`` projects (``request_id`` and ``row`` are always read: they are the key).

    ``store_unique`` is for quick counts: it trusts the store to hold each record once (delivery
    is idempotent, compaction swaps files whole), so only a record both there and in the spool
    (the delivery race) can come twice, and only store rows received since the spool's first
    row can be one. Those are read with their keys and checked against the spool's; earlier
    rows are read without keys (``request_id`` null or absent unless asked for in ``columns``):
    a count of 1 M rows reads 8 bytes a row instead of every request id, and hashes none of
    them. Exports keep the default, which drops any key seen twice.
    """
    if store_unique and with_labels:
        raise ValueError("store_unique reads rows without their keys, so without labels")
    since, until = _utc(since), _utc(until)
    wanted = None if columns is None else [*KEY, *(c for c in columns if c not in KEY)]
    spool = _spool_predictions(settings, model, version, since, until)
    if wanted is not None:
        if store_unique and "received_at" not in wanted:
            wanted.append("received_at")
        spool = [t.select([c for c in t.column_names if c in wanted]) for t in spool]
    store = open_store(settings)
    if store_unique and wanted is not None:
        first = _first_received(spool)
        lean = [c for c in wanted if c not in KEY or c in (columns or [])]
        if first is None:
            sources = store.prediction_batches(model, version, since, until, lean, batch_rows)
        else:
            sources = [
                *store.prediction_batches(model, version, since, first, lean, batch_rows),
                *store.prediction_batches(model, version, first, until, wanted, batch_rows),
            ]
    else:
        sources = store.prediction_batches(model, version, since, until, wanted, batch_rows)
    schema = _unify([*(t.schema for t in spool), *(s.schema for s in sources)]) or _EMPTY
    if ROLE not in schema.names:
        schema = schema.append(pa.field(ROLE, pa.string()))
    labels = None
    if with_labels:
        fb_spool = _spool_feedback(settings, model)
        # Store first, then the spool (newer): read order breaks ties of received_at.
        labels = latest_labels(chain(store.feedback_batches(model, since, until), fb_spool))
        schema = schema.append(pa.field(LABEL, pa.string()))
    return PredictionStream(schema, sources, spool, labels, batch_rows, store_unique=store_unique)


def _first_received(tables: list[pa.Table]) -> datetime | None:
    firsts = [pc.min(t.column("received_at")).as_py() for t in tables if t.num_rows]
    return min(firsts) if firsts else None


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
    columns: list[str] | None = None,
    ordered: bool = True,
) -> pd.DataFrame:
    """The whole window as one DataFrame ordered by time, ``label`` joined: for small windows.
    ``columns`` projects as in ``open_predictions`` (with ``ordered``, include ``received_at``
    and ``role``: the frame is ordered by them); ``ordered=False`` skips the sort (about half
    the cost for a reader that only aggregates)."""
    stream = open_predictions(
        settings, model, version, since, until, with_labels=with_labels, columns=columns
    )
    batches = list(stream)
    if not batches:
        return _empty_predictions(with_labels)
    df = pa.Table.from_batches(batches, stream.schema).to_pandas()
    if ordered:
        df = df.sort_values(["received_at", "request_id", "row", "role"], kind="stable")
    return df.reset_index(drop=True)


def _empty_predictions(with_labels: bool) -> pd.DataFrame:
    cols = ["request_id", "row", "received_at", "model", "version", "sha256", "endpoint",
            "status", "latency_s", "prediction", "metadata", "role"]  # fmt: skip
    if with_labels:
        cols.append("label")
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df["received_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def read_feedback(settings: Settings, model: str) -> pd.DataFrame:
    """Every label received for the model (its history) with its time and source, in the order
    received; the one in force per row is ``labels.labels_in_force(read_feedback(…))``."""
    stored = [
        conform_feedback(pa.Table.from_batches([b]))
        for b in open_store(settings).feedback_batches(model)
    ]
    tables = [*stored, *_spool_feedback(settings, model)]  # store first, then the (newer) spool
    if not tables:
        return FEEDBACK_SCHEMA.empty_table().to_pandas()
    df = pa.concat_tables(tables).to_pandas()
    # A segment delivered between the two reads is seen twice: keep one copy (the last, so
    # that labels sent in one instant keep their order).
    df = df.sort_values("received_at", kind="stable").drop_duplicates(keep="last")
    return df.reset_index(drop=True)


def read_rejected(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    since, until = _utc(since), _utc(until)
    _, rej, _ = group_frames(_spool_frames(settings, REJECTED))  # spool first, as above
    tables = [rejected_table(frames) for frames in rej.values()]
    tables.append(open_store(settings).rejected_rows(since, until))
    df = (pa.concat_tables(tables) if tables else REJECTED_SCHEMA.empty_table()).to_pandas()
    df = df.drop_duplicates(["request_id", "received_at"], keep="first")
    if since is not None:
        df = df[df["received_at"] >= pd.Timestamp(since)]
    if until is not None:
        df = df[df["received_at"] < pd.Timestamp(until)]
    return df.sort_values("received_at").reset_index(drop=True)
