"""The shipped Prometheus rules, example config and Grafana dashboard: valid, and behaving.

`promtool` (Debian package `prometheus`) checks the files and runs each alert rule on
synthetic series, so that every alert is shown to fire on its condition and stay quiet
on a healthy one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import assets
from tests.promstack import require_binary

pytestmark = pytest.mark.prometheus

I = {"instance": "vigil-0:8000", "job": "vigil"}  # noqa: E741 — the scrape labels of one instance
D = {"job": "vigil_drift", "model": "m"}  # labels the Pushgateway keeps for the drift job


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _hist(name: str, labels: dict[str, str], per_bucket: dict[str, str]) -> list[dict[str, str]]:
    return [_series(f"{name}_bucket", {**labels, "le": le}, v) for le, v in per_bucket.items()]


REQ = {**I, "model": "m", "version": "1", "endpoint": "v1_predict"}
COUNT = "vigil_request_duration_seconds_count"

# alert → (input series, minute it is checked, labels expected when firing) for a bad case,
# and input series of a healthy case in which it must stay quiet at the same minute.
Scenario = tuple[list[dict[str, str]], int, list[dict[str, str]], list[dict[str, str]]]
SCENARIOS: dict[str, Scenario] = {
    "VigilDown": (
        [_series("up", I, "0x10")], 3, [I], [_series("up", I, "1x10")],
    ),
    "VigilNoModelServing": (
        [
            _series("up", I, "1x10"),
            _series("vigil_model_info", {**I, "model": "m", "version": "1", "sha256": "s",
                                         "serving": "1"}, "0x10"),
        ],
        3,
        [I, {}],  # the instance without a serving version, and "none anywhere"
        [
            _series("up", I, "1x10"),
            _series("vigil_model_info", {**I, "model": "m", "version": "1", "sha256": "s",
                                         "serving": "1"}, "1x10"),
        ],
    ),
    "VigilModelLoadFailures": (
        [_series("vigil_model_load_failures_total", {**I, "model": "m", "version": "2"},
                 "0 1 1 1 1 1")],
        3,
        [{"instance": I["instance"], "model": "m", "version": "2"}],
        [_series("vigil_model_load_failures_total", {**I, "model": "m", "version": "2"}, "0x5")],
    ),
    "VigilHighLatencyP99": (
        _hist("vigil_request_duration_seconds", {**REQ, "status": "200"},
              {"0.05": "0x20", "0.25": "0+100x20", "+Inf": "0+100x20"}),
        16,
        [{"model": "m", "version": "1"}],
        _hist("vigil_request_duration_seconds", {**REQ, "status": "200"},
              {"0.005": "0+100x20", "0.25": "0+100x20", "+Inf": "0+100x20"}),
    ),
    "VigilHighErrorRatio": (
        [_series(COUNT, {**REQ, "status": "200"}, "0+10x20"),
         _series(COUNT, {**REQ, "status": "500"}, "0+10x20")],
        12,
        [{"model": "m"}],
        [_series(COUNT, {**REQ, "status": "200"}, "0+100x20"),
         _series(COUNT, {**REQ, "status": "500"}, "0+1x20")],
    ),
    "VigilHighClientErrorRatio": (
        [_series(COUNT, {**REQ, "status": "200"}, "0+10x30"),
         _series(COUNT, {**REQ, "status": "422"}, "0+10x30")],
        22,
        [{"model": "m"}],
        [_series(COUNT, {**REQ, "status": "200"}, "0+100x30"),
         _series(COUNT, {**REQ, "status": "422"}, "0+5x30")],
    ),
    "VigilIOLogUnhealthy": (
        [_series("vigil_iolog_healthy", I, "0x5")], 3, [I],
        [_series("vigil_iolog_healthy", I, "1x5")],
    ),
    "VigilIOLogDeliveryFailing": (
        [_series("vigil_iolog_failures_total", {**I, "stage": "deliver"}, "0+1x20")],
        12,
        [{"instance": I["instance"], "stage": "deliver"}],
        [_series("vigil_iolog_failures_total", {**I, "stage": "deliver"}, "0x20")],
    ),
    "VigilIOLogBacklogGrowing": (
        [_series("vigil_iolog_backlog_bytes", I, "30000000+1000000x40")],
        35,
        [I],
        [_series("vigil_iolog_backlog_bytes", I, "40000000 30000000 40000000 30000000x37")],
    ),
    "VigilIOLogSegmentsQuarantined": (
        [_series("vigil_iolog_quarantined_segments", I, "0 1x10")],
        7,
        [{"instance": I["instance"]}],
        [_series("vigil_iolog_quarantined_segments", I, "0x10")],
    ),
    "VigilUnloggedPredictions": (
        [_series("vigil_iolog_unlogged_records_total", I, "0+5x10")],
        3,
        [{"instance": I["instance"]}],
        [_series("vigil_iolog_unlogged_records_total", I, "0x10")],
    ),
    "VigilRolloutAutoAborted": (
        [_series("vigil_rollout_aborts_total", {**I, "model": "m", "who": "auto"}, "0 1x10")],
        3,
        [{"model": "m"}],
        [_series("vigil_rollout_aborts_total", {**I, "model": "m", "who": "cli"}, "0 1x10")],
    ),
    "VigilDataDrift": (
        [_series("vigil_drift_dataset_drift", {**D, "version": "1"}, "1x5")],
        3,
        [{**D, "version": "1"}],
        [_series("vigil_drift_dataset_drift", {**D, "version": "1"}, "0x5")],
    ),
    "VigilPredictionDrift": (
        [_series("vigil_drift_prediction_drift", {**D, "version": "1"}, "1x5")],
        3,
        [{**D, "version": "1"}],
        [_series("vigil_drift_prediction_drift", {**D, "version": "1"}, "0x5")],
    ),
    "VigilModelPerformanceDrop": (
        [_series("vigil_drift_model_drift", {**D, "version": "1"}, "1x5")],
        3,
        [{**D, "version": "1"}],
        [_series("vigil_drift_model_drift", {**D, "version": "1"}, "0x5")],
    ),
    "VigilEstimatedPerformanceDrop": (
        [_series("vigil_drift_estimated_model_drift", {**D, "version": "1"}, "1x5")],
        3,
        [{**D, "version": "1"}],
        [_series("vigil_drift_estimated_model_drift", {**D, "version": "1"}, "0x5")],
    ),
    "VigilUnseenCategories": (
        [_series("vigil_drift_feature_unseen_share", {**D, "version": "1", "feature": "plan"},
                 "0.2x5")],
        3,
        [{"model": "m", "version": "1", "feature": "plan"}],
        [_series("vigil_drift_feature_unseen_share", {**D, "version": "1", "feature": "plan"},
                 "0.01x5")],
    ),
    "VigilDriftJobFailing": (
        [_series("vigil_drift_status", {**D, "status": "error"}, "1x5"),
         _series("vigil_drift_status", {**D, "status": "ok"}, "0x5")],
        3,
        [{**D, "status": "error"}],
        [_series("vigil_drift_status", {**D, "status": "error"}, "0x5"),
         _series("vigil_drift_status", {**D, "status": "ok"}, "1x5")],
    ),
    "VigilDriftJobStale": (
        # Last run at t=0, nothing since: stale after an hour (plus `for: 5m`).
        [_series("vigil_drift_last_run_timestamp_seconds", D, "0x100")],
        70,
        [{"model": "m"}],
        # A run every minute: the timestamp follows the clock.
        [_series("vigil_drift_last_run_timestamp_seconds", D, "0+60x100")],
    ),
    "VigilDriftJobNeverRan": (
        [_series("up", I, "1x100")],
        65,
        [{}],
        [_series("vigil_drift_last_run_timestamp_seconds", D, "0+60x100")],
    ),
}  # fmt: skip


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_promtool_accepts_the_alert_rules() -> None:
    result = _promtool("check", "rules", str(assets.asset_path(assets.ALERTS)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(assets.alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_example_prometheus_config() -> None:
    result = _promtool("check", "config", str(assets.asset_path(assets.PROMETHEUS_CONFIG)))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(assets.read_text(assets.PROMETHEUS_CONFIG))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The alert rules select job="vigil"; pushed drift gauges keep their own job label.
    assert jobs["vigil"]["metrics_path"] == "/metrics"
    assert jobs["pushgateway"]["honor_labels"] is True


def test_every_alert_has_for_severity_and_runbook() -> None:
    rules = assets.alert_rules()
    assert len({r.name for r in rules}) == len(rules), "alert names must be unique"
    for rule in rules:
        assert rule.for_ not in ("0s", "0m", ""), rule.name
        assert rule.labels.get("severity") in {"warning", "critical"}, rule.name
        for key in ("summary", "description", "runbook"):
            assert len(rule.annotations.get(key, "")) > 10, f"{rule.name}: {key}"


def _without_annotations(tmp_path: Path) -> None:
    # Annotations are rendered templates and promtool compares them verbatim, so the unit
    # tests run on a copy without them (`check rules` above validates the templates).
    rules = assets.load_rule_file()
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))


def test_each_alert_fires_on_its_condition_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    rules = assets.alert_rules()
    assert {r.name for r in rules} == set(SCENARIOS), "give every alert a scenario"
    _without_annotations(tmp_path)
    severity = {r.name: r.labels["severity"] for r in rules}
    tests: list[dict[str, Any]] = []
    for name, (bad, minute, labels, healthy) in SCENARIOS.items():
        expected = [{"exp_labels": {**lab, "severity": severity[name]}} for lab in labels]
        checks = [
            # At minute 0 the condition may already hold, but `for:` has not elapsed.
            {"eval_time": "0m", "alertname": name, "exp_alerts": []},
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": expected},
        ]
        tests.append({"interval": "1m", "input_series": bad, "alert_rule_test": checks})
        quiet = [{"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}]
        tests.append({"interval": "1m", "input_series": healthy, "alert_rule_test": quiet})
    unit = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "unit.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = _promtool("test", "rules", "unit.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _rectangles_overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    dashboard = assets.load_dashboard()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    panels = list(assets.panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    boxes = [p["gridPos"] for p in panels]
    assert all(b["x"] >= 0 and b["w"] > 0 and b["x"] + b["w"] <= 24 for b in boxes)
    for i, a in enumerate(boxes):
        assert not any(_rectangles_overlap(a, b) for b in boxes[i + 1 :]), a
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query"
    for panel in panels:
        if panel["type"] == "row":
            continue
        # Every query goes to the datasource the user picked, never a hard-coded one.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_shows_what_operators_need() -> None:
    queries = assets.dashboard_queries()
    used = set().union(*(assets.metric_names(q.expr) for q in queries))
    required = {
        "vigil_request_duration_seconds_count",  # request rate, error ratio
        "vigil_request_duration_seconds_bucket",  # latency quantiles
        "vigil_request_errors_total",
        "vigil_model_inference_duration_seconds_bucket",
        "vigil_request_rows_bucket",
        "vigil_requests_in_flight",
        "vigil_model_info",
        "vigil_iolog_backlog_bytes",
        "vigil_iolog_records_delivered_total",
        "vigil_iolog_failures_total",
        "vigil_drift_dataset_drift",
        "vigil_drift_drifted_share",
        "vigil_drift_feature_score",
        "vigil_drift_prediction_drift",
        "vigil_drift_model_drift",
        "vigil_drift_performance",
        "vigil_drift_estimated_performance",
        "vigil_drift_estimated_model_drift",
        "vigil_drift_weighted_share",
        "vigil_drift_last_run_timestamp_seconds",
    }
    assert required <= used, required - used
    latency = [q.expr for q in queries if "vigil_request_duration_seconds_bucket" in q.expr]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({quantile}, sum by (le, model, version)")
            for e in latency
        ), quantile
    # Metrics labelled by model follow the dashboard's model selector.
    unlabelled = {"vigil_requests_in_flight", "vigil_request_errors_total"}
    for q in queries:
        names = assets.metric_names(q.expr)
        if any(n.startswith(("vigil_request", "vigil_model", "vigil_drift")) for n in names):
            assert names <= unlabelled or "$model" in q.expr, q.name


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    datasources = yaml.safe_load(assets.read_text(assets.DATASOURCE_PROVISIONING))
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus" and prometheus["url"].startswith("http")
    providers = yaml.safe_load(assets.read_text(assets.DASHBOARD_PROVISIONING))
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_grafana_variables_are_substituted_in_every_form() -> None:
    values = {"model": "breast-cancer", "__rate_interval": "1m"}
    expr = 'rate(x{model=~"$model"}[$__rate_interval]) + y{m="${model}", n="${model:regex}"}'
    assert assets.substitute(expr, values) == (
        'rate(x{model=~"breast-cancer"}[1m]) + y{m="breast-cancer", n="breast-cancer"}'
    )
    assert assets.substitute("z{m='[[model]]'}", values) == "z{m='breast-cancer'}"
    with pytest.raises(KeyError, match="version"):
        assets.substitute('x{version="$version"}', values)


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'sum by (model, le) (rate(a_bucket{status=~"5..", x="b_total"}[5m])) '
        "/ on (model) group_left (version) sum(b_total offset 1h) > bool 0.5 "
        "or absent(c == 1) unless d and time() - e > 1e6"
    )
    assert assets.metric_names(expr) == {"a_bucket", "b_total", "c", "d", "e"}


def test_template_variables_become_promql() -> None:
    (model,) = assets.variable_queries()
    assert model.name == "model"
    assert model.expr == "group by (model) (vigil_model_info)"


# Series only a binary classifier has (CBPE), and the per-task performance metric names.
BINARY_ONLY = {
    "vigil_drift_estimated_performance",
    "vigil_drift_estimated_performance_band",
    "vigil_drift_estimated_reference_performance",
    "vigil_drift_estimated_model_drift",
}
TASK_METRICS = {"classifier": {"accuracy", "f1_macro"}, "regressor": {"mae", "rmse", "r2"}}


def test_no_panel_assumes_probabilities_and_every_task_has_its_panels() -> None:
    panels = [p for p in assets.panels(assets.load_dashboard()) if p["type"] != "row"]
    by_metric: dict[str, list[str]] = {}
    for panel in panels:
        title = panel["title"]
        exprs = [t["expr"] for t in panel["targets"]]
        names = set().union(*(assets.metric_names(e) for e in exprs))
        for name in names:
            by_metric.setdefault(name, []).append(title)
        if names & BINARY_ONLY:
            assert "binary classifiers" in title, title  # the title says whom it is for
        for expr in exprs:
            if "vigil_drift_performance" in expr or "vigil_drift_reference_performance" in expr:
                # a panel shows one task's metrics: accuracy and MAE never share an axis
                tasks = [
                    task
                    for task, metrics in TASK_METRICS.items()
                    if any(m in expr for m in metrics)
                ]
                assert len(tasks) == 1 and tasks[0] in title.lower(), (title, expr)
    # a regressor shows its prediction distribution and errors; a classifier its class mix
    assert any("regressor" in t.lower() for t in by_metric["vigil_drift_prediction_quantile"])
    assert any("classifier" in t.lower() for t in by_metric["vigil_drift_prediction_class_share"])
    assert by_metric["vigil_drift_feature_unseen_share"]
    assert by_metric["vigil_unseen_categories_total"]  # the service's live count, too
