"""The I/O log schema, written once: spool frames → Arrow tables, used by every writer and reader.

predictions (partitioned model=/version=/date=): request_id, row, received_at, sha256, endpoint,
  status, latency_s, <feature…> (float64; PII-hashed features as string), prediction,
  proba_<class…> (float64), metadata (JSON string)
rejected (partitioned date=): request_id, received_at, model, version, endpoint, status, error, body
feedback (partitioned model=/date=): request_id, row, label, received_at
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, Frame

RESERVED_COLUMNS = frozenset(
    {
        "request_id", "row", "received_at", "model", "version", "date", "sha256", "endpoint",
        "status", "latency_s", "prediction", "metadata", "label",
    }
)  # fmt: skip
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
    ]
)

PredictionKey = tuple[str, int, str]  # model, version, date (YYYY-MM-DD)
FeedbackKey = tuple[str, str]  # model, date


def proba_column(class_name: str) -> str:
    return f"proba_{class_name}"


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array((seconds * 1_000_000).astype("int64"), pa.int64()).cast(TS)


def predictions_table(frames: list[Frame]) -> pa.Table:
    """One Arrow table from prediction frames of one model version (same features and classes)."""
    first = frames[0].header
    features, classes = first["features"], first["classes"]
    hashed_names = list(first["hashed"])
    counts = np.array([f.header["rows"] for f in frames])
    arrays = [f.arrays() for f in frames]
    inputs = np.concatenate([a[0] for a in arrays])
    labels = np.concatenate([a[1] for a in arrays])
    proba = np.concatenate([a[2] for a in arrays]).astype(np.float64)

    def repeat(key: str) -> list[object]:
        return np.repeat(np.array([f.header[key] for f in frames], dtype=object), counts).tolist()

    cols: dict[str, pa.Array] = {
        "request_id": pa.array(repeat("request_id"), pa.string()),
        "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
        "received_at": _ts(np.repeat([f.header["received_at"] for f in frames], counts)),
        "sha256": pa.array(repeat("sha256"), pa.string()),
        "endpoint": pa.array(repeat("endpoint"), pa.string()),
        "status": pa.array(
            np.repeat([f.header["status"] for f in frames], counts).astype(np.int32)
        ),
        "latency_s": pa.array(np.repeat([f.header["latency_s"] for f in frames], counts)),
    }
    for i, name in enumerate(features):
        cols[name] = pa.array(inputs[:, i])
    for name in hashed_names:
        cols[name] = pa.array([v for f in frames for v in f.header["hashed"][name]], pa.string())
    cols["prediction"] = pa.array(np.asarray(classes, dtype=object)[labels].tolist(), pa.string())
    for j, cname in enumerate(classes):
        cols[proba_column(cname)] = pa.array(proba[:, j])
    cols["metadata"] = pa.array(
        np.repeat(
            np.array([orjson.dumps(f.header["metadata"]).decode() for f in frames], dtype=object),
            counts,
        ).tolist(),
        pa.string(),
    )
    return pa.table(cols)


def rejected_table(frames: list[Frame]) -> pa.Table:
    h = [f.header for f in frames]
    return pa.table(
        {
            "request_id": [x["request_id"] for x in h],
            "received_at": _ts(np.array([x["received_at"] for x in h], dtype=np.float64)),
            "model": [x["model"] for x in h],
            "version": [x["version"] for x in h],
            "endpoint": [x["endpoint"] for x in h],
            "status": pa.array([x["status"] for x in h], pa.int32()),
            "error": [x["error"] for x in h],
            "body": [x["body"] for x in h],
        },
        schema=REJECTED_SCHEMA,
    )


def feedback_table(frames: list[Frame]) -> pa.Table:
    items = [(i[0], i[1], i[2], f.header["received_at"]) for f in frames for i in f.header["items"]]
    return pa.table(
        {
            "request_id": [i[0] for i in items],
            "row": pa.array([i[1] for i in items], pa.int32()),
            "label": [i[2] for i in items],
            "received_at": _ts(np.array([i[3] for i in items], dtype=np.float64)),
        },
        schema=FEEDBACK_SCHEMA,
    )


def group_frames(
    frames: Iterable[Frame],
) -> tuple[
    dict[PredictionKey, list[Frame]], dict[str, list[Frame]], dict[FeedbackKey, list[Frame]]
]:
    preds: dict[PredictionKey, list[Frame]] = defaultdict(list)
    rejected: dict[str, list[Frame]] = defaultdict(list)
    feedback: dict[FeedbackKey, list[Frame]] = defaultdict(list)
    for f in frames:
        h = f.header
        if f.table == PREDICTIONS:
            preds[(h["model"], int(h["version"]), day(h["received_at"]))].append(f)
        elif f.table == REJECTED:
            rejected[day(h["received_at"])].append(f)
        elif f.table == FEEDBACK:
            feedback[(h["model"], day(h["received_at"]))].append(f)
    return preds, rejected, feedback
