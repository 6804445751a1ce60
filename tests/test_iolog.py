"""Acknowledged means logged: crash safety, log failures, PII, export and back-test."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from model_store.demo import DEMO_MODEL, demo_data, demo_pipeline, holdout_mask
from model_store.manifest import PiiPolicy
from model_store.registration import register_sklearn
from model_store.store import ModelStore
from service.app import create_app
from service.cli.main import app as cli
from service.iolog.deliver import LEAD_FILE, Deliverer
from service.iolog.reader import read_predictions, read_rejected
from service.metrics import DeliveryMetrics
from service.settings import Settings
from tests.load import run_load
from tests.servers import VigilServer, wait_http

URL = f"/v1/models/{DEMO_MODEL}/predict"


def _settings_for(server: VigilServer) -> Settings:
    return Settings(
        model_store=Path(server.env["VIGIL_MODEL_STORE"]),
        data_dir=Path(server.env["VIGIL_DATA_DIR"]),
    )


def _assert_exactly_once(df: pd.DataFrame, ok: dict[str, int]) -> None:
    counts = df.groupby("request_id").size()
    missing = [rid for rid in ok if rid not in counts.index]
    assert not missing, f"{len(missing)} acknowledged requests missing, e.g. {missing[:3]}"
    wrong = {rid: int(counts[rid]) for rid, n in ok.items() if counts[rid] != n}
    assert not wrong, f"rows logged != rows sent for {list(wrong.items())[:3]}"
    assert not df.duplicated(["request_id", "row"]).any()


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_request(
    vigil_server: Callable[..., VigilServer], rows: list[dict[str, float]]
) -> None:
    server = vigil_server(env={"VIGIL_FSYNC": "never"})
    stop = threading.Event()
    holder: dict[str, object] = {}
    loader = threading.Thread(
        target=lambda: holder.update(r=run_load(server.url, rows, threads=8, seconds=20, stop=stop))
    )
    loader.start()
    time.sleep(1.5)
    server.kill()  # SIGKILL: no shutdown hook runs
    stop.set()
    loader.join()
    result = holder["r"]
    assert len(result.ok) > 50  # type: ignore[attr-defined]
    restarted = vigil_server()  # takes over the dead worker's spool
    settings = _settings_for(restarted)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the orphan spool is delivered to Parquet
        if (
            not any(settings.spool_dir.glob("*/seg-*"))
            or len(list(settings.spool_dir.iterdir())) <= 1
        ):
            break
        time.sleep(0.2)
    _assert_exactly_once(read_predictions(settings, DEMO_MODEL), result.ok)  # type: ignore[attr-defined]
    restarted.stop()
    assert list((settings.data_dir / "iolog" / "predictions").rglob("*.parquet"))
    _assert_exactly_once(read_predictions(settings, DEMO_MODEL), result.ok)  # type: ignore[attr-defined]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC: the disk is full
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("policy", ["reject", "serve"])
def test_full_disk_is_visible_and_recovers(
    vigil_server: Callable[..., VigilServer],
    rows: list[dict[str, float]],
    small_disk: Path,
    policy: str,
) -> None:
    server = vigil_server(
        env={
            "VIGIL_DATA_DIR": str(small_disk),
            "VIGIL_ON_LOG_FAILURE": policy,
            "VIGIL_COMPACT_INTERVAL_S": "0.2",
        }
    )
    body = {"instances": rows[:5]}
    assert httpx.post(server.url + URL, json=body).status_code == 200
    filler = _fill(small_disk)
    r = httpx.post(server.url + URL, json={"instances": rows * 10})
    if policy == "reject":
        assert r.status_code == 503 and "I/O log" in r.json()["error"]
        ready = httpx.get(server.url + "/v2/health/ready")
        assert ready.status_code == 503 and "I/O log" in ready.json()["error"]
    else:
        assert r.status_code == 200
        metrics = httpx.get(server.url + "/metrics").text
        assert "vigil_iolog_unlogged_records_total 5690.0" in metrics
    assert "vigil_iolog_healthy 0.0" in httpx.get(server.url + "/metrics").text
    filler.unlink()  # space returns
    wait_http(server.url + "/v2/health/ready", timeout=10)
    assert httpx.post(server.url + URL, json=body).status_code == 200


def test_unwritable_data_dir_refuses_to_serve_unlogged(
    home: Path, rows: list[dict[str, float]]
) -> None:
    settings = Settings(model_store=home / "models", data_dir=Path("/proc/vigil-cannot-write"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(URL, json={"instances": rows[:1]})
        assert r.status_code == 503 and "spool" in r.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503


def test_pii_values_never_reach_any_file(home: Path, store: ModelStore) -> None:
    x, y, names = demo_data()
    mask = holdout_mask(y)
    pipe = demo_pipeline().fit(x.to_numpy()[~mask], y[~mask])
    register_sklearn(
        store, "pii-model", pipe, x, y, holdout_mask=mask, class_names=names,
        pii={"mean_radius": PiiPolicy.HASH, "mean_texture": PiiPolicy.DROP},
        metadata_pii={"email": PiiPolicy.DROP, "customer": PiiPolicy.HASH},
    )  # fmt: skip
    secret_radius, secret_texture = 17.123456789, 23.987654321
    row = {**x.iloc[0].to_dict(), "mean_radius": secret_radius, "mean_texture": secret_texture}
    settings = Settings(
        model_store=home / "models", data_dir=home / "data", pii_secret="k" * 32,
        compact_interval_s=0.1, spool_segment_seconds=0.1,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/v1/models/pii-model/predict",
            json={
                "instances": [row],
                "metadata": {"email": "jane@example.org", "customer": "cust-998877"},
            },
        )
        assert r.status_code == 200
        df = read_predictions(settings, "pii-model")
    assert "mean_texture" not in df.columns
    assert len(df.loc[0, "mean_radius"]) == 64  # an HMAC-SHA256 hex digest, stable for joins
    assert json.loads(df.loc[0, "metadata"]).keys() == {"customer"}
    for raw in ("17.123456789", "23.987654321", "jane@example.org", "cust-998877"):
        hits = [
            p for p in (home / "data").rglob("*") if p.is_file() and raw.encode() in p.read_bytes()
        ]
        assert not hits, f"{raw} found in {hits}"
    # and the float's raw bytes are not in any binary file either
    for value in (secret_radius, secret_texture):
        needle = np.float64(value).tobytes()
        assert not [
            p for p in (home / "data").rglob("*") if p.is_file() and needle in p.read_bytes()
        ]
    result = CliRunner().invoke(
        cli, ["backtest", "--model", "pii-model", "--candidate", "1"],
        env={"VIGIL_MODEL_STORE": str(home / "models"), "VIGIL_DATA_DIR": str(home / "data")},
    )  # fmt: skip
    assert result.exit_code == 1 and "PII" in result.output


def test_feedback_export_round_trip_and_rejected_log(
    client: TestClient, settings: Settings, rows: list[dict[str, float]], tmp_path: Path
) -> None:
    r = client.post(
        URL,
        json={"instances": rows[:4], "metadata": {"session": "s1"}},
        headers={"X-Request-ID": "exp-1"},
    )
    assert r.status_code == 200
    fb = [
        {"request_id": "exp-1", "row": i, "label": lab}
        for i, lab in enumerate(["benign", "malignant"])
    ]
    assert client.post("/v1/feedback", json=fb).json() == {"accepted": 2}
    assert client.post(URL, json={"instances": [{"bogus": 1}]}).status_code == 422
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    for suffix in ("parquet", "csv"):
        out = tmp_path / f"export.{suffix}"
        res = CliRunner().invoke(
            cli, ["logs", "export", "--model", DEMO_MODEL, "--out", str(out)], env=env
        )
        assert res.exit_code == 0, res.output
        back = (
            pd.read_parquet(out)
            if suffix == "parquet"
            else pd.read_csv(out, parse_dates=["received_at"])
        )
        assert list(back["request_id"]) == ["exp-1"] * 4
        assert list(back["label"].where(back["label"].notna(), None)) == [
            "benign",
            "malignant",
            None,
            None,
        ]
        np.testing.assert_array_equal(
            back["mean_radius"].to_numpy(), [row["mean_radius"] for row in rows[:4]]
        )
        assert back["received_at"].dt.tz is not None
        assert json.loads(back.loc[0, "metadata"]) == {"session": "s1"}
    rejected = read_rejected(settings)
    assert len(rejected) == 1 and "unknown feature 'bogus'" in rejected.loc[0, "error"]


def test_backtest_reports_agreement_and_real_differences(
    client: TestClient,
    settings: Settings,
    rows: list[dict[str, float]],
    demo: tuple,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    x, y, names = demo
    assert client.post(URL, json={"instances": rows, "id": "bt"}).status_code == 200
    fb = [{"request_id": "bt", "row": i, "label": names[y[i]]} for i in range(len(rows))]
    assert client.post("/v1/feedback", json=fb).status_code == 200
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    same = CliRunner().invoke(
        cli,
        [
            "backtest",
            "--model",
            DEMO_MODEL,
            "--candidate",
            "1",
            "--out",
            str(tmp_path / "same.json"),
        ],
        env=env,
    )
    assert same.exit_code == 0, same.output
    r1 = json.loads((tmp_path / "same.json").read_text())["per_version"]["1"]
    assert r1["rows_replayed"] == len(rows) and r1["label_agreement"] == 1.0
    assert r1["probability_diff"]["max"] == 0.0
    assert r1["served_quality"] == r1["candidate_quality"]
    other = CliRunner().invoke(
        cli,
        ["backtest", "--model", DEMO_MODEL, "--candidate", "2", "--out", str(tmp_path / "v2.json")],
        env=env,
    )
    assert other.exit_code == 0, other.output
    r2 = json.loads((tmp_path / "v2.json").read_text())["per_version"]["1"]
    # The real differences, computed independently from the two models' ONNX outputs
    from service.core.loaded_model import LoadedModel, session_options

    store = ModelStore(settings.model_store)
    p1 = LoadedModel.load(store, DEMO_MODEL, 1, session_options(1, 1)).predict(x.to_numpy())
    p2 = LoadedModel.load(store, DEMO_MODEL, 2, session_options(1, 1)).predict(x.to_numpy())
    diff = np.abs(p1.probabilities.astype(np.float64) - p2.probabilities.astype(np.float64))
    assert r2["label_agreement"] == pytest.approx(float(np.mean(p1.labels == p2.labels)))
    assert r2["label_agreement"] < 1.0
    assert r2["probability_diff"]["max"] == pytest.approx(float(diff.max()), rel=1e-5)
    assert r2["candidate_quality"]["accuracy"] == pytest.approx(float(np.mean(p2.labels == y)))


def test_overlapping_delivery_rounds_deliver_each_row_once(
    home: Path, rows: list[dict[str, float]]
) -> None:
    """A delivery round still running in its thread when another starts (the app's shutdown
    round while a cancelled maintenance round finishes) must neither fail nor duplicate."""
    settings = Settings(
        model_store=home / "models", data_dir=home / "data",
        compact_interval_s=3600, spool_segment_bytes=4096,
    )  # fmt: skip
    settings.spool_dir.mkdir(parents=True)
    lead = os.open(settings.spool_dir / LEAD_FILE, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lead, fcntl.LOCK_EX)  # nobody else leads: the segments stay in the spool
    try:
        with TestClient(create_app(settings)) as client:
            for i in range(150):
                r = client.post(URL, json={"instances": rows[i : i + 2]})
                assert r.status_code == 200, r.text
    finally:
        os.close(lead)
    assert len(list(settings.spool_dir.rglob("seg-*"))) > 20
    metrics = DeliveryMetrics()
    deliverer = Deliverer(settings, metrics)
    start, errors = threading.Barrier(2), []

    def round_() -> None:
        start.wait()
        try:
            deliverer.run_once()
        except Exception as exc:  # the test's point: no round may fail
            errors.append(exc)

    threads = [threading.Thread(target=round_) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    failures = metrics.registry.get_sample_value("vigil_iolog_failures_total", {"stage": "deliver"})
    assert failures == 0  # a round tripping over the other's work counts a failure
    assert not list(settings.spool_dir.rglob("seg-*"))
    df = read_predictions(settings, DEMO_MODEL)
    assert len(df) == 300
    assert not df.duplicated(["request_id", "row"]).any()
