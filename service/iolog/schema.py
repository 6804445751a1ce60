"""The I/O log schema, written once: spool frames → Arrow tables, used by every writer and reader.

predictions (partitioned model=/version=/date=): request_id, row, received_at, sha256, endpoint,
  status, latency_s, <feature…> (float64; categorical features and PII-hashed ones as string),
  prediction (the class name; a regressor's value as float64, and no proba columns),
  proba_<class…> (float64), metadata (JSON string), role (primary | shadow | canary; files
  written before rollouts lack it and read as primary); names a feature may not take are in
  ``model_store.log_columns`` (registration refuses them)
rejected (partitioned date=): request_id, received_at, model, version, endpoint, status, error, body
feedback (partitioned model=/date=): request_id, row, label, received_at, source; every label
  ever sent is kept (history), readers use the latest per (request_id, row): ``labels.in_force``
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa

from model_store.log_columns import proba_column
from service.iolog.frames import PRIMARY, UNKNOWN_SOURCE, Frame

if TYPE_CHECKING:
    pass  # the writer side (deliverer) does without pandas

TS = pa.timestamp("us", tz="UTC")
REJECTED_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("received_at", TS),
        ("model", pa.string()),
        ("version", pa.string()),
        ("endpoint", pa.string()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("body", pa.string()),
    ]
)
FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("label", pa.string()),
        ("received_at", TS),
        ("source", pa.string()),
    ]
)

_T = TypeVar("_T", pa.Table, pa.RecordBatch)
PredictionKey = tuple[str, int, str]  # model, version, date (YYYY-MM-DD)
FeedbackKey = tuple[str, str]  # model, date


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array((seconds * 1_000_000).astype("int64"), pa.int64()).cast(TS)


def predictions_table(frames: list[Frame]) -> pa.Table:
    """One Arrow table from prediction frames of one model version (one schema)."""
    schema = frames[0].schema
    assert schema is not None
    headers = [f.header for f in frames]
    counts = np.fromiter((h["n"] for h in headers), dtype=np.int64, count=len(headers))
    rec = np.frombuffer(b"".join(f.payload for f in frames), dtype=schema.dtype)
    single = bool((counts == 1).all())

    def per_row(values: list[Any]) -> list[Any]:
        if single:
            return values
        return np.repeat(np.array(values, dtype=object), counts).tolist()

    def per_row_num(values: list[float] | list[int]) -> np.ndarray:
        arr = np.asarray(values)
        return arr if single else np.repeat(arr, counts)

    row = (
        np.zeros(len(rec), np.int32)
        if single
        else np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
    )
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(per_row([h["id"] for h in headers]), pa.string()),
        "row": pa.array(row),
        "received_at": _ts(per_row_num([h["ts"] for h in headers]).astype(np.float64)),
        "sha256": pa.array(np.full(len(rec), schema.sha256, dtype=object), pa.string()),
        "endpoint": pa.array(per_row([h["e"] for h in headers]), pa.string()),
        "status": pa.array(per_row_num([h["st"] for h in headers]).astype(np.int32)),
        "latency_s": pa.array(per_row_num([h["l"] for h in headers]).astype(np.float64)),
    }
    x = rec["x"]
    for i, name in enumerate(schema.features):
        cols[name] = pa.array(np.ascontiguousarray(x[:, i]))
    for name in schema.strings:
        cols[name] = pa.array([v for h in headers for v in h["c"][name]], pa.string())
    for name in schema.hashed:
        cols[name] = pa.array([v for h in headers for v in h["h"][name]], pa.string())
    status = cols["status"].to_numpy(zero_copy_only=False)
    # A failed row (a shadow candidate that raised) has no prediction.
    if schema.regression:
        cols["prediction"] = pa.array(np.ascontiguousarray(rec["v"]), mask=status >= 500)
        return _finish_table(cols, headers, per_row)
    classes = np.asarray(schema.classes, dtype=object)
    cols["prediction"] = pa.array(classes[rec["label"]].tolist(), pa.string(), mask=status >= 500)
    p = rec["p"].astype(np.float64)
    for j, cname in enumerate(schema.classes):
        cols[proba_column(cname)] = pa.array(np.ascontiguousarray(p[:, j]))
    return _finish_table(cols, headers, per_row)


def _finish_table(
    cols: dict[str, pa.Array],
    headers: list[dict[str, Any]],
    per_row: Callable[[list[Any]], list[Any]],
) -> pa.Table:
    cols["metadata"] = pa.array(
        per_row([orjson.dumps(h["md"]).decode() if "md" in h else "{}" for h in headers]),
        pa.string(),
    )
    cols["role"] = pa.array(per_row([h.get("r", PRIMARY) for h in headers]), pa.string())
    return pa.table(cols)


def rejected_table(frames: list[Frame]) -> pa.Table:
    h = [f.header for f in frames]
    return pa.table(
        {
            "request_id": [x["id"] for x in h],
            "received_at": _ts(np.array([x["ts"] for x in h], dtype=np.float64)),
            "model": [x["model"] for x in h],
            "version": [x["version"] for x in h],
            "endpoint": [x["e"] for x in h],
            "status": pa.array([x["st"] for x in h], pa.int32()),
            "error": [x["error"] for x in h],
            "body": [x["body"] for x in h],
        },
        schema=REJECTED_SCHEMA,
    )


def feedback_table(frames: list[Frame]) -> pa.Table:
    """Labels in the order they were sent (readers rely on it to break ties in time)."""
    items = [
        (i[0], i[1], i[2], f.header["ts"], f.header.get("src", UNKNOWN_SOURCE))
        for f in frames
        for i in f.header["items"]
    ]
    return pa.table(
        {
            "request_id": [i[0] for i in items],
            "row": pa.array([i[1] for i in items], pa.int32()),
            "label": [i[2] for i in items],
            "received_at": _ts(np.array([i[3] for i in items], dtype=np.float64)),
            "source": [i[4] for i in items],
        },
        schema=FEEDBACK_SCHEMA,
    )


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How every Parquet file of the log is written: zstd, with dictionary encoding for text
    columns only. Ids, model, endpoint and labels repeat; float features almost never do, and
    building (then dropping) their dictionaries made writing 2.5x slower: a 1 M-row export wrote
    595k rows/s with dictionaries everywhere, 1.5 M rows/s with text ones, in a smaller file."""
    text = [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    return {"compression": "zstd", "use_dictionary": text}


def conform_feedback(table: pa.Table) -> pa.Table:
    """A feedback table in FEEDBACK_SCHEMA; files written before sources get ``unknown``."""
    if "source" not in table.column_names:
        source = pa.array([UNKNOWN_SOURCE] * table.num_rows, pa.string())
        table = table.append_column("source", source)
    return table.select(FEEDBACK_SCHEMA.names).cast(FEEDBACK_SCHEMA)


def group_frames(
    frames: Iterable[Frame],
) -> tuple[
    dict[PredictionKey, list[Frame]], dict[str, list[Frame]], dict[FeedbackKey, list[Frame]]
]:
    """Frames by destination: (model, version, date), date, (model, date)."""
    by_schema: dict[tuple[str, int], list[Frame]] = defaultdict(list)
    rejected: dict[str, list[Frame]] = defaultdict(list)
    feedback: dict[FeedbackKey, list[Frame]] = defaultdict(list)
    for f in frames:
        h = f.header
        kind = h["t"]
        if kind == "p":
            assert f.schema is not None
            by_schema[(f.schema.key, int(h["ts"] // 86400))].append(f)
        elif kind == "r":
            rejected[day(h["ts"])].append(f)
        elif kind == "f":
            feedback[(h["model"], day(h["ts"]))].append(f)
    preds: dict[PredictionKey, list[Frame]] = defaultdict(list)
    for (_key, days), group in by_schema.items():
        schema = group[0].schema
        assert schema is not None
        preds[(schema.model, schema.version, day(days * 86400))].extend(group)
    return preds, rejected, feedback


@dataclass(frozen=True, slots=True)
class BatchSource:
    """A stored part of a window: its schema, and its record batches as they are read."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


def with_model(table: _T, model: str, version: int) -> _T:
    """Readers' rows carry ``model`` and ``version`` after ``received_at``; Parquet files and
    spool frames lack them (their directory or schema frame says them)."""
    n = table.num_rows
    at = min(3, table.num_columns)
    # pa.repeat, not a Python list of n values: that was a quarter of a 1 M-row count's time
    if "model" not in table.schema.names:
        table = table.add_column(at, "model", pa.repeat(pa.scalar(model, pa.string()), n))
    if "version" not in table.schema.names:
        table = table.add_column(at + 1, "version", pa.repeat(pa.scalar(version, pa.int64()), n))
    return table
