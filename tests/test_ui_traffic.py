"""The console's traffic figures, read from the I/O log: one request per request (not per row,
not per shadow copy), 5xx as errors, latency quantiles within 2 % of the exact ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.iolog.frames import Schema, encode_prediction, read_frames
from service.iolog.parquet_store import ParquetStore
from service.iolog.reader import read_predictions
from service.iolog.record import IORecord
from service.settings import Settings
from service.ui.traffic import read_traffic
from tests.conftest import MODEL

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
FEATURES = ("f_a", "f_b")


def _record(rid: str, version: int, at: float, status: int, latency: float, role: str) -> bytes:
    record = IORecord(
        rid, at, MODEL, version, "sha", "v1_predict", status, latency, FEATURES,
        np.zeros((3, 2)), ("malignant", "benign"), np.zeros(3, "i4"),
        np.full((3, 2), 0.5, "f4"), {}, role=role,
    )  # fmt: skip
    schema = Schema.build(record, None)
    return schema.frame() + encode_prediction(record, schema, None)


def test_requests_errors_and_roles_per_version_and_bucket(
    settings: Settings, tmp_path: Path
) -> None:
    blobs = [
        # v1: 4 requests of 3 rows in the first minute, one of them a 500
        *(_record(f"a{i}", 1, T0.timestamp() + i, 500 if i == 3 else 200, 0.01, "primary")
          for i in range(4)),
        # v2: 2 canary requests in the third minute, and shadow copies that are not requests
        *(_record(f"b{i}", 2, T0.timestamp() + 130 + i, 200, 0.02, "canary") for i in range(2)),
        *(_record(f"a{i}", 2, T0.timestamp() + i, 200, 0.5, "shadow") for i in range(4)),
    ]  # fmt: skip
    seg = tmp_path / "seg"
    seg.write_bytes(b"".join(blobs))
    ParquetStore(Path(settings.log_store_url)).deliver(list(read_frames(seg)), "s1")
    t = read_traffic(settings, MODEL, T0, T0 + timedelta(minutes=5), buckets=5)
    assert t.bucket == timedelta(minutes=1)
    one, two = t.totals[1], t.totals[2]
    assert (one.requests, one.errors, two.requests, two.errors) == (4, 1, 2, 0)
    assert one.p50_s == pytest.approx(0.01, rel=0.02)  # the failed request has no latency
    assert two.p99_s == pytest.approx(0.02, rel=0.02)  # shadow latencies are not the client's
    assert t.series[1].times == [T0] and t.series[1].requests == [4]
    assert t.series[2].times == [T0 + timedelta(minutes=2)] and t.series[2].errors == [0]
    assert t.total.requests == 6 and t.total.error_rate == pytest.approx(1 / 6)
    # quantiles of all versions' requests together: 3 at 10 ms, 2 at 20 ms
    assert t.total.p50_s == pytest.approx(0.01, rel=0.02)
    assert t.total.p99_s == pytest.approx(0.02, rel=0.02)


def test_quantiles_match_the_logged_latencies(
    client: TestClient, settings: Settings, rows: list[dict[str, float]]
) -> None:
    for i in range(60):
        r = client.post(f"/v1/models/{MODEL}/predict", json={"instances": rows[i : i + 2]})
        assert r.status_code == 200
    now = datetime.now(UTC)
    t = read_traffic(settings, MODEL, now - timedelta(hours=1), now + timedelta(seconds=1))
    logged = read_predictions(settings, MODEL)
    latency = logged.loc[logged["row"] == 0, "latency_s"].to_numpy()
    p50, p99 = np.quantile(latency, [0.5, 0.99], method="inverted_cdf")
    s = t.totals[1]
    assert s.requests == 60 and sum(t.series[1].requests) == 60
    assert s.p50_s == pytest.approx(p50, rel=0.02) and s.p99_s == pytest.approx(p99, rel=0.02)


def test_an_empty_window_has_no_traffic(settings: Settings) -> None:
    t = read_traffic(settings, MODEL, T0, T0 + timedelta(hours=1))
    assert t.totals == {} and t.total.requests == 0 and t.total.error_rate is None
