"""Requests, errors and latency per version and time bucket, read from the I/O log.

Read from the log, not from this process's metrics, so the figures cover every replica. A
request is its row 0 (latency is logged per request, on each of its rows); shadow rows are
copies, not requests. An error is a 5xx, as in the rollout comparison. Latency quantiles are of
the requests served without error, read from a histogram of 60 log-spaced bins per decade
(1 µs to 1000 s), so each is within 2 % of the exact value: counting into bins is one pass
of numpy over the window, where sorting each bucket cost several times more at 1 M rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.iolog.reader import open_predictions
from service.settings import Settings

COLUMNS = ["version", "status", "latency_s", "row", "role"]
_PER_DECADE = 60
_LOW = -6.0  # 1 µs
_BINS = 9 * _PER_DECADE  # up to 1000 s


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int
    errors: int
    p50_s: float | None
    p99_s: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


EMPTY = Summary(0, 0, None, None)


@dataclass(slots=True)
class VersionSeries:
    times: list[datetime] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    p50_s: list[float | None] = field(default_factory=list)
    p99_s: list[float | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Traffic:
    since: datetime
    until: datetime
    bucket: timedelta
    totals: dict[int, Summary]
    series: dict[int, VersionSeries]

    total: Summary = EMPTY
    """All versions together, quantiles over all their requests."""


@dataclass(slots=True)
class _Columns:
    """The requests of one batch: time (µs), version, failed, latency."""

    ts: np.ndarray
    version: np.ndarray
    failed: np.ndarray
    latency: np.ndarray


def _requests(batch: pa.RecordBatch) -> _Columns:
    first = pc.equal(batch.column("row"), 0)
    if "role" in batch.schema.names:
        first = pc.and_(first, pc.not_equal(pc.fill_null(batch.column("role"), ""), "shadow"))
    rows = batch.filter(first)

    def col(name: str, dtype: type) -> np.ndarray:
        values: np.ndarray = np.asarray(rows.column(name).to_numpy(zero_copy_only=False), dtype)
        return values

    return _Columns(
        ts=np.asarray(rows.column("received_at").cast(pa.int64()).to_numpy(zero_copy_only=False)),
        version=col("version", np.int64),
        failed=col("status", np.int64) >= 500,
        latency=col("latency_s", np.float64),
    )


def _bins(latency: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (np.log10(latency) - _LOW) * _PER_DECADE
    bins: np.ndarray = np.clip(np.nan_to_num(scaled, nan=0.0, neginf=0.0), 0, _BINS - 1)
    return bins.astype(np.int64)


def _quantiles(hist: np.ndarray) -> tuple[float | None, float | None]:
    """p50 and p99 from one histogram: the geometric middle of the bin holding each."""
    n = int(hist.sum())
    if not n:
        return None, None
    cum = np.cumsum(hist)
    out = []
    for q in (0.5, 0.99):
        b = int(np.searchsorted(cum, q * n, side="left"))
        out.append(float(10 ** (_LOW + (b + 0.5) / _PER_DECADE)))
    return out[0], out[1]


def read_traffic(
    settings: Settings, model: str, since: datetime, until: datetime, buckets: int = 60
) -> Traffic:
    """The window ``[since, until)`` in ``buckets`` equal time buckets, per version."""
    bucket_us = max(int((until - since).total_seconds() * 1e6) // buckets, 1)
    start_us = int(since.timestamp() * 1e6)
    stream = open_predictions(
        settings, model, since=since, until=until, with_labels=False, columns=COLUMNS,
        store_unique=True,
    )  # fmt: skip
    parts = [_requests(b) for b in stream if b.num_rows]
    bucket = timedelta(microseconds=bucket_us)
    if not parts or not sum(len(p.ts) for p in parts):
        return Traffic(since, until, bucket, {}, {})
    # each batch holds one version or a few: unique per batch, not a sort of the window
    versions = np.unique(np.concatenate([pc.unique(p.version).to_numpy() for p in parts]))
    vcode = np.searchsorted(versions, np.concatenate([p.version for p in parts]))
    slot = vcode * buckets + np.clip(
        (np.concatenate([p.ts for p in parts]) - start_us) // bucket_us, 0, buckets - 1
    )
    failed = np.concatenate([p.failed for p in parts])
    cells = len(versions) * buckets
    requests = np.bincount(slot, minlength=cells).reshape(len(versions), buckets)
    errors = np.bincount(slot[failed], minlength=cells).reshape(len(versions), buckets)
    ok = ~failed
    lat_bins = _bins(np.concatenate([p.latency for p in parts])[ok])
    hist = np.bincount(slot[ok] * _BINS + lat_bins, minlength=cells * _BINS)
    hist = hist.reshape(len(versions), buckets, _BINS)
    totals: dict[int, Summary] = {}
    series: dict[int, VersionSeries] = {}
    for i, v in enumerate(versions.tolist()):
        totals[v] = Summary(
            int(requests[i].sum()), int(errors[i].sum()), *_quantiles(hist[i].sum(0))
        )
        s = series[v] = VersionSeries()
        for b in np.flatnonzero(requests[i]).tolist():
            s.times.append(since + bucket * b)
            s.requests.append(int(requests[i, b]))
            s.errors.append(int(errors[i, b]))
            p50, p99 = _quantiles(hist[i, b])
            s.p50_s.append(p50)
            s.p99_s.append(p99)
    all_versions = hist.sum(axis=(0, 1))
    total = Summary(int(requests.sum()), int(errors.sum()), *_quantiles(all_versions))
    return Traffic(since, until, bucket, totals, series, total)
