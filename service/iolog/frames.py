"""The spool's on-disk format: self-checking frames, one per request (rows inside as arrays).

frame := MAGIC u32:header_len u32:payload_len u32:crc32(header+payload) header payload
header is JSON; payload holds the arrays named in header["arrays"] back to back. A torn frame
at the end of a segment (crash mid-write) fails its length or CRC check and is ignored, which is
safe: its request was never acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_store.manifest import PiiPolicy
from service.iolog.record import IORecord, RejectedRecord

MAGIC = b"VGL1"
_HEAD = struct.Struct("<4sIII")
PREDICTIONS = "predictions"
REJECTED = "rejected"
FEEDBACK = "feedback"
TABLES = (PREDICTIONS, REJECTED, FEEDBACK)


@dataclass(frozen=True, slots=True)
class PiiRules:
    features: dict[str, PiiPolicy]
    metadata: dict[str, PiiPolicy]
    secret: bytes

    def digest(self, value: str) -> str:
        return hmac.new(self.secret, value.encode(), hashlib.sha256).hexdigest()


def _frame(header: dict[str, Any], payload: bytes) -> bytes:
    head = orjson.dumps(header)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _HEAD.pack(MAGIC, len(head), len(payload), crc) + head + payload


def encode_prediction(record: IORecord, pii: PiiRules | None) -> bytes:
    names = list(record.feature_names)
    inputs = record.inputs
    hashed: dict[str, list[str]] = {}
    metadata = record.metadata
    if pii is not None:
        keep = [i for i, n in enumerate(names) if n not in pii.features]
        for i, n in enumerate(names):
            if pii.features.get(n) is PiiPolicy.HASH:
                hashed[n] = [pii.digest(repr(float(v))) for v in inputs[:, i].tolist()]
        inputs = np.ascontiguousarray(inputs[:, keep])
        names = [names[i] for i in keep]
        metadata = {
            k: pii.digest(v) if pii.metadata.get(k) is PiiPolicy.HASH else v
            for k, v in metadata.items()
            if pii.metadata.get(k) is not PiiPolicy.DROP
        }
    rows = record.rows
    header = {
        "t": PREDICTIONS,
        "request_id": record.request_id,
        "received_at": record.received_at,
        "model": record.model,
        "version": record.version,
        "sha256": record.sha256,
        "endpoint": record.endpoint,
        "status": record.status,
        "latency_s": record.latency_s,
        "features": names,
        "hashed": hashed,
        "classes": record.class_names,
        "metadata": metadata,
        "rows": rows,
    }
    payload = (
        np.ascontiguousarray(inputs, dtype="<f8").tobytes()
        + np.ascontiguousarray(record.labels, dtype="<i4").tobytes()
        + np.ascontiguousarray(record.probabilities, dtype="<f4").tobytes()
    )
    return _frame(header, payload)


def encode_rejected(record: RejectedRecord) -> bytes:
    header = {
        "t": REJECTED,
        "request_id": record.request_id,
        "received_at": record.received_at,
        "model": record.model,
        "version": record.version,
        "endpoint": record.endpoint,
        "status": record.status,
        "error": record.error,
        "body": record.body_excerpt,
    }
    return _frame(header, b"")


def encode_feedback(model: str, received_at: float, items: list[tuple[str, int, str]]) -> bytes:
    header = {
        "t": FEEDBACK,
        "model": model,
        "received_at": received_at,
        "items": items,
    }
    return _frame(header, b"")


@dataclass(slots=True)
class Frame:
    header: dict[str, Any]
    payload: bytes

    @property
    def table(self) -> str:
        return str(self.header["t"])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """inputs [rows, n_features] f8, labels [rows] i4, probabilities [rows, n_classes] f4."""
        h = self.header
        rows, nf, nc = h["rows"], len(h["features"]), len(h["classes"])
        buf = self.payload
        a = rows * nf * 8
        b = a + rows * 4
        inputs = np.frombuffer(buf, "<f8", rows * nf, 0).reshape(rows, nf)
        labels = np.frombuffer(buf, "<i4", rows, a)
        proba = np.frombuffer(buf, "<f4", rows * nc, b).reshape(rows, nc)
        return inputs, labels, proba


def read_frames(path: Path) -> Iterator[Frame]:
    """Every intact frame of a segment, in order; stops at the first torn or corrupt one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    pos, end = 0, len(data)
    while pos + _HEAD.size <= end:
        magic, hlen, plen, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        stop = start + hlen + plen
        if magic != MAGIC or stop > end:
            return
        head = data[start : start + hlen]
        payload = data[start + hlen : stop]
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            return
        yield Frame(orjson.loads(head), payload)
        pos = stop
