"""The spool's on-disk format: self-checking frames, one per request.

frame := MAGIC u32:header_len u32:payload_len u32:crc32(header+payload) header payload

Three kinds, by header["t"]:
- "s" schema: a model version's features and classes, written once per segment before the
  first prediction that uses it (key "k"); prediction frames refer to it by that key.
- "p" prediction: request fields; payload = ``rows`` fixed-size records (x f8[n], label i4,
  proba f4[c]; a regressor's: x f8[n], value f8), so a segment's predictions decode with one
  ``np.frombuffer``. Categorical (string) features travel in the header ("c"), like hashed ones.
- "r" rejected, "f" feedback: header only.
A torn frame at the end of a segment (crash mid-write) fails its length or CRC check and is
ignored, which is safe: its request was never acknowledged.
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

MAGIC = b"VGL2"
_HEAD = struct.Struct("<4sIII")
PREDICTIONS = "predictions"
REJECTED = "rejected"
FEEDBACK = "feedback"
# Source of labels whose sender was not recorded (frames and tables from before sources).
UNKNOWN_SOURCE = "unknown"
# Who answered a logged row (the ``role`` column): the served version, outside a rollout and
# during one; the candidate on a copy of the request (shadow); the candidate serving (canary).
PRIMARY, SHADOW, CANARY = "primary", "shadow", "canary"
ROLES = (PRIMARY, SHADOW, CANARY)
_KIND = {"p": PREDICTIONS, "r": REJECTED, "f": FEEDBACK, "s": "schema"}


@dataclass(frozen=True, slots=True)
class PiiRules:
    features: dict[str, PiiPolicy]
    metadata: dict[str, PiiPolicy]
    secret: bytes

    def digest(self, value: str) -> str:
        return hmac.new(self.secret, value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Schema:
    """What a prediction frame's payload holds, declared once per segment."""

    key: str
    model: str
    version: int
    sha256: str
    features: tuple[str, ...]  # numeric features kept in the payload
    hashed: tuple[str, ...]  # PII features logged as HMAC strings in the header
    classes: tuple[str, ...]
    keep: tuple[int, ...]  # indices of ``features`` in the model's inputs
    strings: tuple[str, ...] = ()  # categorical features logged as strings in the header
    regression: bool = False  # payload: a float64 value per row instead of label + proba

    @property
    def dtype(self) -> np.dtype[Any]:
        if self.regression:
            return np.dtype([("x", "<f8", (len(self.features),)), ("v", "<f8")])
        return np.dtype(
            [
                ("x", "<f8", (len(self.features),)),
                ("label", "<i4"),
                ("p", "<f4", (len(self.classes),)),
            ]
        )

    @classmethod
    def build(cls, record: IORecord, pii: PiiRules | None) -> Schema:
        names = record.feature_names
        masked = pii.features if pii else {}
        text = set(record.categorical)
        keep = tuple(i for i, n in enumerate(names) if n not in masked and i not in text)
        hashed = tuple(n for n in names if masked.get(n) is PiiPolicy.HASH)
        strings = tuple(names[i] for i in record.categorical if names[i] not in masked)
        key = f"{record.model}/{record.version}/{record.sha256[:16]}"
        return cls(
            key, record.model, record.version, record.sha256,
            tuple(names[i] for i in keep), hashed, record.class_names, keep, strings,
            record.values is not None,
        )  # fmt: skip

    def frame(self) -> bytes:
        header: dict[str, Any] = {
            "t": "s",
            "k": self.key,
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "features": self.features,
            "hashed": self.hashed,
            "classes": self.classes,
            "keep": self.keep,
        }
        if self.strings:
            header["strings"] = self.strings
        if self.regression:
            header["reg"] = True
        return _frame(header, b"")


def _frame(header: dict[str, Any], payload: bytes) -> bytes:
    head = orjson.dumps(header)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _HEAD.pack(MAGIC, len(head), len(payload), crc) + head + payload


def _text(value: Any) -> str | None:
    """A categorical value as logged; a failed shadow's blank input (NaN) as null."""
    return value if isinstance(value, str) else None


def _digest_input(pii: PiiRules, value: Any) -> str:
    """A PII feature's keyed hash: of a string as it is, of a number as its float ``repr``."""
    return pii.digest(value if isinstance(value, str) else repr(float(value)))


def encode_prediction(record: IORecord, schema: Schema, pii: PiiRules | None) -> bytes:
    inputs = record.inputs
    metadata = record.metadata
    header: dict[str, Any] = {
        "t": "p",
        "k": schema.key,
        "id": record.request_id,
        "ts": record.received_at,
        "e": record.endpoint,
        "st": record.status,
        "l": record.latency_s,
        "n": record.rows,
    }
    if record.role != PRIMARY:  # most frames: the header stays as it was before roles
        header["r"] = record.role
    if schema.strings:
        idx = {n: i for i, n in enumerate(record.feature_names)}
        header["c"] = {n: [_text(v) for v in inputs[:, idx[n]].tolist()] for n in schema.strings}
    if pii is not None:
        if schema.hashed:
            idx = {n: i for i, n in enumerate(record.feature_names)}
            header["h"] = {
                n: [_digest_input(pii, v) for v in inputs[:, idx[n]].tolist()]
                for n in schema.hashed
            }
        inputs = inputs[:, list(schema.keep)]
        metadata = {
            k: pii.digest(v) if pii.metadata.get(k) is PiiPolicy.HASH else v
            for k, v in metadata.items()
            if pii.metadata.get(k) is not PiiPolicy.DROP
        }
    elif record.categorical:
        inputs = inputs[:, list(schema.keep)]
    if metadata:
        header["md"] = metadata
    if record.values is not None:
        rec = np.empty(record.rows, dtype=schema.dtype)
        rec["x"] = inputs
        rec["v"] = record.values
        return _frame(header, rec.tobytes())
    if record.rows == 1:
        payload = (
            inputs.astype("<f8", copy=False).tobytes()
            + record.labels.astype("<i4").tobytes()
            + record.probabilities.astype("<f4", copy=False).tobytes()
        )
    else:
        rec = np.empty(record.rows, dtype=schema.dtype)
        rec["x"] = inputs
        rec["label"] = record.labels
        rec["p"] = record.probabilities
        payload = rec.tobytes()
    return _frame(header, payload)


def encode_rejected(record: RejectedRecord, error: str, body: str) -> bytes:
    """``error`` and ``body``: what the PII policy lets the log keep of them (see pii.py)."""
    header = {
        "t": "r",
        "id": record.request_id,
        "ts": record.received_at,
        "model": record.model,
        "version": record.version,
        "e": record.endpoint,
        "st": record.status,
        "error": error,
        "body": body,
    }
    return _frame(header, b"")


def encode_feedback(
    model: str, received_at: float, items: list[tuple[str, int, str]], source: str = UNKNOWN_SOURCE
) -> bytes:
    header = {"t": "f", "model": model, "ts": received_at, "items": items, "src": source}
    return _frame(header, b"")


@dataclass(slots=True)
class Frame:
    header: dict[str, Any]
    payload: bytes
    schema: Schema | None = None

    @property
    def table(self) -> str:
        return _KIND[self.header["t"]]


class CorruptSegment(ValueError):
    """A sealed segment holds a frame that fails its checks: its content, not the store, is bad."""


def read_frames(path: Path, *, strict: bool = False) -> Iterator[Frame]:
    """Every intact record frame of a segment, in order, with its schema attached; stops at the
    first torn or corrupt frame. ``strict`` (sealed ``.seg`` segments, which are written whole
    and fsynced before their rename) raises CorruptSegment there instead: only a segment left
    open by a crash may end in a torn frame."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    schemas: dict[str, Schema] = {}
    pos, end = 0, len(data)
    while pos + _HEAD.size <= end:
        magic, hlen, plen, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        stop = start + hlen + plen
        if magic != MAGIC or stop > end:
            break
        head = data[start : start + hlen]
        payload = data[start + hlen : stop]
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            break
        pos = stop
        header = orjson.loads(head)
        kind = header["t"]
        if kind == "s":
            schemas[header["k"]] = Schema(
                header["k"], header["model"], header["version"], header["sha256"],
                tuple(header["features"]), tuple(header["hashed"]), tuple(header["classes"]),
                tuple(header["keep"]), tuple(header.get("strings", ())),
                bool(header.get("reg", False)),
            )  # fmt: skip
        elif kind == "p":
            schema = schemas.get(header["k"])
            if schema is None:  # cannot happen for frames we wrote; refuse to guess
                if strict:
                    raise CorruptSegment(f"{path.name}: frame at byte {pos} has no schema")
                return
            yield Frame(header, payload, schema)
        else:
            yield Frame(header, payload)
    if strict and pos != end:
        raise CorruptSegment(f"{path.name}: corrupt or torn frame at byte {pos} of {end}")
