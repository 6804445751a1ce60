"""What SREs scrape: latency histograms by model/version/endpoint/status, summed over workers."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.testclient import TestClient
from starlette.types import ASGIApp

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


def _labelled_series(text: str) -> set[str]:
    """Series that carry a model or version label (the others do not depend on requests)."""
    return {
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line[:1] != "#" and ('model="' in line or 'version="' in line)
    }


def _made_up_requests(n: int, row: dict[str, float]) -> Iterator[tuple[str, object]]:
    """``n`` requests naming models and versions the store does not have, on every path."""
    rng = random.Random(7)
    v1 = {"instances": [row]}
    v2 = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}
    for i in range(n):
        name, number = f"m{rng.getrandbits(48):x}", str(rng.randrange(3, 10**9))
        yield [
            (f"/v1/models/{name}/predict", v1),
            (f"/v1/models/{DEMO_MODEL}/versions/{number}/predict", v1),
            (f"/v1/models/{name}/versions/{number}/predict", v1),
            (f"/v1/models/{DEMO_MODEL}/versions/{name}/predict", v1),
            (f"/v2/models/{name}/infer", v2),
            (f"/v2/models/{DEMO_MODEL}/versions/{number}/infer", v2),
            ("/v1/feedback", [{"request_id": name, "label": "x", "model": name}]),
        ][i % 7]


async def _post_all(app: ASGIApp, requests: Iterator[tuple[str, object]]) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vigil") as c:
        return [(await c.post(path, json=body)).status_code for path, body in requests]


def test_made_up_model_and_version_names_add_no_series(client: TestClient, rows: list) -> None:  # type: ignore[type-arg]
    """Label values come only from the store: 10,000 requests for names it does not know are
    counted under one ``_unknown`` value instead of a new series per name."""
    for path, body in _made_up_requests(7, rows[0]):  # each kind once: the _unknown series
        assert client.post(path, json=body).status_code == 404
    before = _labelled_series(client.get("/metrics").text)
    assert any('model="_unknown"' in s for s in before)
    assert any(
        f'model="{DEMO_MODEL}",role="primary",status="404",version="_unknown"' in s for s in before
    )
    # In the app's own event loop (the client's portal), without a thread hop per request.
    statuses = client.portal.call(_post_all, client.app, _made_up_requests(10_000, rows[0]))
    assert set(statuses) == {404}
    text = client.get("/metrics").text
    assert _labelled_series(text) == before
    assert _sample(text, "vigil_request_errors_total") == 10_007
