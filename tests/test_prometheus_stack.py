"""Every shipped PromQL expression, evaluated by a real Prometheus scraping a real Vigil.

Prometheus (Debian package) scrapes a live `vigil serve` and a real Pushgateway every second
and loads monitoring/prometheus/alerts.yml. The test sends V1/V2 traffic with a drifted input
distribution, bad requests and feedback, runs the drift job, and then asks Prometheus for
every expression of the dashboard and the alert rules. Two models are served, the demo
classifier and the demo regressor with categorical features (`diabetes-mixed`, its traffic
shifted, a fifth of one feature in a category never seen in training, noisy feedback), so the
panels of both kinds of model must have data.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_store.demo import DIABETES_MIXED, train_demo_model
from model_store.store import ModelStore
from monitoring import assets
from monitoring.simulate import CategoryShift, run_simulation
from tests.conftest import MODEL
from tests.promstack import (
    Prometheus,
    Pushgateway,
    ScrapeTarget,
    start_prometheus,
    start_pushgateway,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

GRAFANA_VALUES = {
    "model": f"{MODEL}|{DIABETES_MIXED}",  # both selected, as Grafana's multi-value regex
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}
# Counters with a label per failure cause only exist once that failure happened; a healthy
# run cannot show them, so expressions built only on them may be empty.
FAILURE_ONLY = {
    "vigil_model_load_failures_total",
    "vigil_iolog_failures_total",
    "vigil_rollout_aborts_total",
    # Series of a running rollout (this scenario runs none): a shadow, a canary, the gates.
    "vigil_shadow_duration_seconds_count",
    "vigil_shadow_duration_seconds_bucket",
    "vigil_shadow_failures_total",
    "vigil_rollout_mode",
    "vigil_rollout_canary_percent",
    "vigil_rollout_candidate_version",
    "vigil_rollout_revision",
    "vigil_rollout_gate",
    "vigil_rollout_agreement",
}

FIRES, QUIET, EITHER = "fires", "quiet", "either"
# What each alert expression must return in this scenario (healthy service, every input
# feature scaled by 1.5, 40 % of the requests rejected). A new alert must be classified here.
ALERT_EXPECTATIONS = {
    "VigilDown": QUIET,
    "VigilNoModelServing": QUIET,
    "VigilModelLoadFailures": QUIET,
    "VigilHighLatencyP99": EITHER,  # depends on how loaded the test machine is
    "VigilHighErrorRatio": QUIET,
    "VigilHighClientErrorRatio": FIRES,
    "VigilIOLogUnhealthy": QUIET,
    "VigilIOLogDeliveryFailing": QUIET,
    "VigilIOLogBacklogGrowing": QUIET,
    "VigilIOLogSegmentsQuarantined": QUIET,
    "VigilUnloggedPredictions": QUIET,
    "VigilRolloutAutoAborted": QUIET,
    "VigilDataDrift": FIRES,
    "VigilPredictionDrift": FIRES,  # the drifted inputs move the predictions too
    "VigilModelPerformanceDrop": FIRES,  # and the model is wrong on them (true labels sent)
    # without labels too: the scaled inputs leave v2 predicting one class, so its expected
    # macro-F1 falls (v1's estimate holds; CBPE cannot see that v1 is now wrong)
    "VigilEstimatedPerformanceDrop": FIRES,
    "VigilUnseenCategories": FIRES,  # diabetes-mixed's sex gets a fifth "unknown"
    "VigilDriftJobFailing": QUIET,
    "VigilDriftJobStale": QUIET,
    "VigilDriftJobNeverRan": QUIET,
}
DRIFT_SCALE = 1.5  # every feature times 1.5: an unmistakable shift of the input distribution


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    gw = start_pushgateway(tmp_path / "pushgateway")
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def factory(targets: list[ScrapeTarget]) -> Prometheus:
        rules = assets.asset_path(assets.ALERTS)
        prom = start_prometheus(tmp_path / "prometheus", targets, rule_files=[rules])
        started.append(prom)
        prom.wait_ready()
        return prom

    yield factory
    for prom in started:
        prom.stop()


def _send_traffic(url: str, demo: tuple[pd.DataFrame, np.ndarray, list[str]]) -> int:
    """V1 and V2 predictions for both versions, bad requests and feedback, over ~3 s so that
    Prometheus scrapes the counters while they move (rate() needs two differing samples).
    Returns the number of prediction requests sent."""
    x, y, names = demo
    features = list(x.columns)
    drifted = (x.to_numpy() * DRIFT_SCALE).round(6)
    truth = [names[int(i)] for i in y]
    requests = 0
    batch = 20
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for i in range(36):
            lo = (i * batch) % (len(drifted) - batch)
            inputs = drifted[lo : lo + batch].tolist()
            instances = [dict(zip(features, r, strict=True)) for r in inputs]
            for path in (f"/v1/models/{MODEL}/predict", f"/v1/models/{MODEL}/versions/2/predict"):
                r = http.post(path, json={"instances": instances})
                assert r.status_code == 200, r.text
                request_id = r.json()["request_id"]
                fb = [
                    {"request_id": request_id, "row": j, "label": truth[lo + j], "model": MODEL}
                    for j in range(batch)
                ]
                assert http.post("/v1/feedback", json=fb).status_code == 200
            tensor = {"name": "input", "shape": [batch, len(features)], "datatype": "FP64"}
            r = http.post(
                f"/v2/models/{MODEL}/infer", json={"inputs": [{**tensor, "data": inputs}]}
            )
            assert r.status_code == 200, r.text
            # Two rejected requests per round: a missing feature and an unknown model.
            bad = http.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"x": 1.0}]})
            assert 400 <= bad.status_code < 500, bad.text
            assert http.post("/v1/models/no-such-model/predict", json={}).status_code == 404
            requests += 5  # feedback is not a prediction request
            time.sleep(0.07)
    return requests


def _wait_delivered(url: str, timeout: float = 20.0) -> None:
    """Until every spooled I/O record (predictions and feedback) is in the log store, which
    is what the drift job reads."""
    deadline = time.monotonic() + timeout
    counts: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        counts = {"spooled": {}, "delivered": {}}
        for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
            kind = family.name.removeprefix("vigil_iolog_records_").removesuffix("_total")
            if kind in counts:
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        counts[kind][sample.labels["table"]] = sample.value
        if counts["spooled"] and counts["spooled"] == counts["delivered"]:
            return
        time.sleep(0.2)
    raise TimeoutError(f"I/O records not delivered after {timeout}s: {counts}")


def _run_drift_job(env: dict[str, str], model: str = MODEL) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli.monitoring", "drift", "run", "--model", model],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def _check(prom: Prometheus, query: assets.Query, expect: str) -> str | None:
    """None when the expression behaves as expected, else the problem in one line."""
    expr = assets.substitute(query.expr, GRAFANA_VALUES)
    answer = prom.query(expr)
    where = f"{query.source} {query.name!r}: {expr}"
    if answer.get("status") != "success":
        return f"{where} → invalid: {answer.get('errorType')}: {answer.get('error')}"
    result = answer["data"]["result"]
    if expect == FIRES and not result:
        return f"{where} → expected to fire in this scenario, returned nothing"
    if expect == QUIET and result:
        return f"{where} → expected to stay quiet, returned {result}"
    if expect == "data" and not _finite(result):
        return f"{where} → expected finite data, got {result or 'nothing'}"
    if query.source == "alert":
        # An empty alert is fine, but the series it watches must exist.
        for name in sorted(assets.metric_names(expr) - FAILURE_ONLY):
            if not prom.query(f"count({name})")["data"]["result"]:
                return f"{where} → watches {name}, which has no series"
    return None


def _active_alerts(prom: Prometheus, expected: set[str], timeout: float = 10.0) -> set[str]:
    """Pending or firing alert names, once ``expected`` are among them (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        active = {a["labels"]["alertname"] for a in prom.api("alerts")["data"]["alerts"]}
        if expected <= active or time.monotonic() > deadline:
            return active
        time.sleep(0.25)


def test_every_dashboard_and_alert_expression_evaluates_with_data(
    vigil_server: Any,
    pushgateway: Pushgateway,
    prometheus_factory: Any,
    demo: tuple[pd.DataFrame, np.ndarray, list[str]],
    store: ModelStore,
) -> None:
    started = time.monotonic()
    train_demo_model(store, DIABETES_MIXED)
    server = vigil_server(
        env={
            "VIGIL_PUSHGATEWAY_URL": pushgateway.url,
            "VIGIL_COMPACT_INTERVAL_S": "0.2",
            "VIGIL_SPOOL_SEGMENT_SECONDS": "0.5",
        }
    )
    prom = prometheus_factory(
        [
            ScrapeTarget("vigil", server.url.removeprefix("http://")),
            ScrapeTarget("pushgateway", pushgateway.url.removeprefix("http://"), True),
        ]
    )
    prom.wait_targets_up()

    stack_up = time.monotonic()
    requests = _send_traffic(server.url, demo)
    regressor = run_simulation(
        server.url, DIABETES_MIXED, 300, batch=20, feedback=True, label_noise=1.0,
        drift={"s5": 1.5, "sex": CategoryShift("unknown", 0.2)},
    )  # fmt: skip
    assert regressor.errors == 0 and regressor.feedback_errors == 0, regressor.line()
    requests += regressor.requests
    _wait_delivered(server.url)
    drift_started = time.monotonic()
    drift_summary = _run_drift_job(server.env) + _run_drift_job(server.env, DIABETES_MIXED)
    drift_s = time.monotonic() - drift_started
    # traffic goes on while the job runs: live rates (unseen categories per served row) need
    # rows within the last rate interval when the expressions are evaluated
    live = run_simulation(
        server.url, DIABETES_MIXED, 60, batch=20, seed=3,
        drift={"sex": CategoryShift("unknown", 0.2)},
    )  # fmt: skip
    assert live.errors == 0, live.line()
    requests += live.requests

    # Wait until Prometheus has scraped everything the expressions need.
    prom.wait_for(f"sum(vigil_request_duration_seconds_count) >= {requests}")
    prom.wait_for("sum(vigil_iolog_records_delivered_total) > 0")
    for model in (MODEL, DIABETES_MIXED):
        prom.wait_for(
            f'vigil_drift_last_run_timestamp_seconds{{job="vigil_drift",model="{model}"}}'
        )

    problems: list[str] = []
    queries = assets.all_queries()
    alerts = {rule.name for rule in assets.alert_rules()}
    assert alerts == set(ALERT_EXPECTATIONS), "classify every alert in ALERT_EXPECTATIONS"
    for query in queries:
        if query.source == "alert":
            expect = ALERT_EXPECTATIONS[query.name]
        elif assets.metric_names(query.expr) <= FAILURE_ONLY:
            expect = EITHER
        else:
            expect = "data"
        problem = _check(prom, query, expect)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)

    # Prometheus itself evaluates the rule file without errors, and the alerts that must
    # fire in this scenario are pending (their `for:` has not elapsed yet).
    groups = prom.api("rules")["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert set(health) == alerts
    assert all(h == "ok" for h, _ in health.values()), health
    firing = {name for name, e in ALERT_EXPECTATIONS.items() if e == FIRES}
    quiet = {name for name, e in ALERT_EXPECTATIONS.items() if e == QUIET}
    active = _active_alerts(prom, firing)
    assert firing <= active and not (active & quiet), active
    print(
        f"\n{len(queries)} expressions checked; {time.monotonic() - started:.1f}s in all "
        f"(stack up {stack_up - started:.1f}s, drift job {drift_s:.1f}s, {requests} requests)"
        f"\ndrift job: {drift_summary.strip()}"
    )
