"""What SREs scrape: latency histograms by model/version/endpoint/status, summed over workers."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL
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
        for _ in range(6):  # each scrape lands on either worker; every one sees the sum
            text = c.get("/metrics").text
            n = _sample(
                text, "vigil_request_duration_seconds_count", endpoint="v1_predict", status="200"
            )
            assert n == 40
            pids.add(_sample(text, "vigil_model_info", model=DEMO_MODEL, serving="1"))
        assert pids == {1.0}  # one serving version, not one series per worker
