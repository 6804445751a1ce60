"""The drift job against a real running Vigil, its real I/O log and a real Pushgateway."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from typer.testing import CliRunner

from model_store.demo import DEMO_MODEL
from model_store.errors import ModelNotFoundError
from model_store.store import ModelStore
from monitoring.drift.job import run_drift
from monitoring.drift.result import Status
from monitoring.simulate import run_simulation
from service.cli.monitoring import app
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer, free_port, wait_http


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus-pushgateway",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/-/ready", timeout=20)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _gauges(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Pushgateway's vigil_drift_* samples keyed by (name, labels other than job/instance)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vigil_drift_"):
                labels = {k: v for k, v in sample.labels.items() if k not in ("job", "instance")}
                out[(sample.name, frozenset(labels.items()))] = sample.value
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"model": MODEL, **labels}.items())


def test_run_analyses_logged_traffic_writes_reports_and_pushes_gauges(
    vigil_server: Callable[..., VigilServer], settings: Settings, pushgateway: str
) -> None:
    server = vigil_server()
    sent = run_simulation(
        server.url, MODEL, 300, batch=25, feedback=True, label_noise=0.3, drift={"mean_radius": 1.5}
    )
    assert sent.rows == 300 and sent.errors == 0 and sent.feedback == 300
    settings = settings.model_copy(update={"pushgateway_url": pushgateway})

    report = run_drift(settings, MODEL)

    assert report.status is Status.DRIFT and report.rows == 300
    (v1,) = report.versions
    assert v1.version == 1 and v1.features["mean_radius"].drifted
    assert v1.flags.model_drift and v1.performance is not None
    assert v1.performance.labelled_rows == 300
    assert report.directory == settings.reports_dir / MODEL / report.run_id
    saved = json.loads((report.directory / "drift.json").read_text())
    assert saved["status"] == "drift" and saved["flags"]["model_drift"] is True
    assert saved["versions"][0]["features"]["mean_radius"]["method"] == "wasserstein"
    assert saved["pushgateway"] == {"pushed": True, "error": None}
    html = (report.directory / "drift.html").read_text()
    assert "mean_radius" in html and len(html) > 100_000  # Evidently's rendered report

    gauges = _gauges(httpx.get(pushgateway + "/metrics").text)
    assert gauges[_key("vigil_drift_status", status="drift")] == 1
    assert gauges[_key("vigil_drift_status", status="ok")] == 0
    assert gauges[_key("vigil_drift_rows", version="1")] == 300
    assert gauges[_key("vigil_drift_model_drift", version="1")] == 1
    assert gauges[_key("vigil_drift_dataset_drift", version="1")] == 0
    assert gauges[_key("vigil_drift_feature_drifted", version="1", feature="mean_radius")] == 1
    score = gauges[_key("vigil_drift_feature_score", version="1", feature="mean_radius")]
    assert score == pytest.approx(v1.features["mean_radius"].score)
    assert gauges[_key("vigil_drift_labelled_rows", version="1")] == 300
    accuracy = gauges[_key("vigil_drift_performance", version="1", metric="accuracy")]
    reference = gauges[_key("vigil_drift_reference_performance", version="1", metric="accuracy")]
    assert reference - accuracy > 0.2
    # label noise is not covariate shift: the estimate without labels sees no drop
    assert gauges[_key("vigil_drift_estimated_model_drift", version="1")] == 0
    assert v1.estimate is not None and v1.estimate.estimated is not None
    estimated = gauges[_key("vigil_drift_estimated_performance", version="1", metric="accuracy")]
    assert estimated == pytest.approx(v1.estimate.estimated["accuracy"])
    low = _key(
        "vigil_drift_estimated_performance_band", version="1", metric="accuracy", bound="low"
    )
    assert gauges[low] <= estimated
    assert gauges[_key("vigil_drift_weighted_share", version="1")] == pytest.approx(
        v1.weighted_share
    )
    assert saved["versions"][0]["estimated_performance"]["estimated"]["accuracy"] == estimated
    for name in ("vigil_drift_drifted_share", "vigil_drift_prediction_drift",
                 "vigil_drift_prediction_score"):  # fmt: skip
        assert _key(name, version="1") in gauges
    assert gauges[_key("vigil_drift_last_run_timestamp_seconds")] >= report.started_at.timestamp()

    # the next run starts where this one ended: nothing new, so too little data, no flag
    again = run_drift(settings, MODEL)
    assert again.since == report.until and again.status is Status.INSUFFICIENT_DATA
    assert not again.flags.any()
    index = json.loads((settings.reports_dir / MODEL / "index.json").read_text())
    assert [r["run_id"] for r in index["runs"]] == [report.run_id, again.run_id]


def test_missing_or_corrupt_reference_ends_in_an_error_report_not_a_crash(
    vigil_server: Callable[..., VigilServer], settings: Settings, store: ModelStore, tmp_path: Path
) -> None:
    server = vigil_server()
    assert run_simulation(server.url, MODEL, 150, batch=50).errors == 0
    reference = store.reference_path(MODEL, 1)
    reference.unlink()
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["drift", "run", "--model", MODEL, "--out", str(out)], env=env)

    assert result.exit_code == 1
    assert "no reference sample" in result.output
    saved = json.loads((out / "drift.json").read_text())
    assert saved["status"] == "error" and saved["versions"][0]["status"] == "error"
    assert (out / "drift.html").is_file()

    reference.write_bytes(b"PAR1 this is not parquet")
    report = run_drift(settings, MODEL, since=datetime.now(UTC) - timedelta(hours=1))
    assert report.status is Status.ERROR and "unreadable" in report.message


def test_empty_window_is_insufficient_data_and_unknown_model_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    report = run_drift(settings, MODEL, out_dir=tmp_path / "r")
    assert report.status is Status.INSUFFICIENT_DATA and report.rows == 0
    assert json.loads((tmp_path / "r" / "drift.json").read_text())["status"] == "insufficient_data"
    with pytest.raises(ModelNotFoundError):
        run_drift(settings, "no-such-model")
    until = datetime.now(UTC)
    backwards = run_drift(settings, MODEL, since=until, until=until - timedelta(hours=1))
    assert backwards.status is Status.ERROR and "window is empty" in backwards.message


def test_no_html_writes_drift_json_only(settings: Settings, tmp_path: Path) -> None:
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    out = tmp_path / "out"
    argv = ["drift", "run", "--model", MODEL, "--out", str(out), "--no-html"]
    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "drift.json").read_text())
    assert saved["files"] == {"json": "drift.json", "html": None}
    assert not (out / "drift.html").exists()


def test_corrupt_log_file_is_named_in_an_error_report(
    tmp_path: Path, settings: Settings, client: TestClient, rows: list
) -> None:  # type: ignore[type-arg]
    assert (
        client.post(f"/v1/models/{DEMO_MODEL}/predict", json={"instances": rows[:5]}).status_code
        == 200
    )
    part = (
        settings.data_dir
        / "iolog"
        / "predictions"
        / f"model={DEMO_MODEL}"
        / "version=1"
        / "date=2026-01-01"
    )
    part.mkdir(parents=True)
    (part / "part-broken.parquet").write_bytes(b"not parquet at all")
    report = run_drift(
        settings, DEMO_MODEL, since=datetime(2025, 12, 31, tzinfo=UTC), out_dir=tmp_path / "r"
    )
    assert report.status.value == "error"
    assert "part-broken.parquet" in (report.error or "")
    assert json.loads((tmp_path / "r" / "drift.json").read_text())["status"] == "error"
    # the service itself is unaffected
    assert (
        client.post(f"/v1/models/{DEMO_MODEL}/predict", json={"instances": rows[:1]}).status_code
        == 200
    )
