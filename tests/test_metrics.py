"""What SREs scrape: latency histograms by model/version/endpoint/status, summed over workers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL
from service.metrics import FLUSH_INTERVAL_S, LATENCY_BUCKETS, CounterBuffer, HistogramBuffer
from tests.servers import VigilServer

URL = f"/v1/models/{DEMO_MODEL}/predict"


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_prediction_metrics_and_probes_not_counted(client: TestClient, rows: list) -> None:  # type: ignore[type-arg]
    for _ in range(3):
        assert client.post(URL, json={"instances": rows[:10]}).status_code == 200
    assert client.post(URL, json={"instances": []}).status_code == 422
    for _ in range(5):
        client.get("/v2/health/ready")
        client.get("/metrics")
    text = client.get("/metrics").text
    count = "vigil_request_duration_seconds_count"
    assert (
        _sample(text, count, model=DEMO_MODEL, version="1", endpoint="v1_predict", status="200")
        == 3
    )
    assert _sample(text, count, endpoint="v1_predict", status="422") == 1
    assert _sample(text, "vigil_request_rows_sum", model=DEMO_MODEL) == 30
    assert _sample(text, "vigil_model_inference_duration_seconds_count", model=DEMO_MODEL) == 3
    assert (
        _sample(text, "vigil_request_errors_total", endpoint="v1_predict", type="invalid_input")
        == 1
    )
    assert _sample(text, "vigil_model_info", model=DEMO_MODEL, version="1", serving="1") == 1
    assert _sample(text, "vigil_iolog_records_spooled_total", table="predictions") == 30
    # probes and scrapes are not predictions
    endpoints = set(re.findall(r'endpoint="([^"]+)"', text))
    assert endpoints <= {"v1_predict", "v2_infer", "feedback"}
    # buckets resolve sub-millisecond latencies
    assert 'le="0.0001"' in text and 'le="0.0005"' in text


def test_scrape_sums_over_workers(vigil_server: Callable[..., VigilServer], rows: list) -> None:  # type: ignore[type-arg]
    server = vigil_server(workers=2)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        pids = set()
        for _ in range(40):
            assert c.post(URL, json={"instances": rows[:2]}).status_code == 200
        # Each worker writes its in-memory sums every FLUSH_INTERVAL_S; the scraped worker
        # writes its own first.
        time.sleep(FLUSH_INTERVAL_S * 2)
        for _ in range(6):  # each scrape lands on either worker; every one sees the sum
            text = c.get("/metrics").text
            n = _sample(
                text, "vigil_request_duration_seconds_count", endpoint="v1_predict", status="200"
            )
            assert n == 40
            pids.add(_sample(text, "vigil_model_info", model=DEMO_MODEL, serving="1"))
        assert pids == {1.0}  # one serving version, not one series per worker


def test_buffered_observations_scrape_exactly_like_direct_ones() -> None:
    """The hot path sums observations in memory; once flushed, the scrape must be the one that
    observing each value directly would give, bucket boundaries (le is inclusive) included."""
    values = [0.0, *LATENCY_BUCKETS, *(b * 1.0001 for b in LATENCY_BUCKETS), 1e-9, 7.5, 1e6]
    direct, buffered = CollectorRegistry(), CollectorRegistry()
    hist = Histogram("lat", "h", ["ep"], buckets=LATENCY_BUCKETS, registry=direct).labels("a")
    cnt = Counter("rows", "c", ["t"], registry=direct).labels("p")
    buf = HistogramBuffer(
        Histogram("lat", "h", ["ep"], buckets=LATENCY_BUCKETS, registry=buffered).labels("a")
    )
    cbuf = CounterBuffer(Counter("rows", "c", ["t"], registry=buffered).labels("p"))
    for v in values:
        hist.observe(v)
        cnt.inc(3)
        buf.observe(v)
        cbuf.inc(3)
    before = generate_latest(buffered)
    buf.flush()
    cbuf.flush()
    buf.flush()  # a second flush with nothing new changes nothing
    cbuf.flush()
    assert b"lat_count{" in before and b'lat_count{ep="a"} 0.0' in before
    strip = re.compile(rb"^.*_created.*$", re.M)  # creation timestamps differ
    assert strip.sub(b"", generate_latest(buffered)) == strip.sub(b"", generate_latest(direct))
