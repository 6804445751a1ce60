"""Which version serves: integrity refusal at load, alias following, failed loads never switched to."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import SecretStr
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL
from model_store.store import ModelStore
from service.app import create_app
from service.settings import Settings

URL = f"/v1/models/{DEMO_MODEL}/predict"


def _tamper(store: ModelStore, version: int) -> None:
    path = store.model_path(DEMO_MODEL, version)
    path.write_bytes(path.read_bytes() + b"tampered")


def test_tampered_production_model_is_refused_at_load(
    settings: Settings, store: ModelStore, rows: list
) -> None:  # type: ignore[type-arg]
    _tamper(store, 1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        failure = ready.json()["models"][DEMO_MODEL]["failures"]["1"]
        assert "sha256" in failure and "does not match" in failure
        r = client.post(URL, json={"instances": rows[:1]})
        assert r.status_code == 503 and "no loadable version" in r.json()["error"]
        # the intact version is still servable explicitly
        ok = client.post(
            f"/v1/models/{DEMO_MODEL}/versions/2/predict", json={"instances": rows[:1]}
        )
        assert ok.status_code == 200
        text = client.get("/metrics").text
        assert 'vigil_model_load_failures_total{model="breast-cancer",version="1"} 1.0' in text


def test_alias_move_is_followed_and_broken_target_keeps_old(
    settings: Settings, store: ModelStore, rows: list
) -> None:  # type: ignore[type-arg]
    with TestClient(create_app(settings)) as client:
        assert client.post(URL, json={"instances": rows[:1]}).json()["version"] == 1
        store.set_alias(DEMO_MODEL, 2)
        deadline = time.monotonic() + 5
        while client.post(URL, json={"instances": rows[:1]}).json()["version"] != 2:
            assert time.monotonic() < deadline, "service did not follow the alias"
            time.sleep(0.05)
        from model_store.demo import train_demo

        v3 = train_demo(store, promote=False).version
        _tamper(store, v3)
        store.set_alias(DEMO_MODEL, v3)  # the store accepts it; the service must refuse it
        time.sleep(1.0)
        r = client.post(URL, json={"instances": rows[:1]})
        assert r.status_code == 200 and r.json()["version"] == 2
        report = client.get("/v2/health/ready").json()["models"][DEMO_MODEL]
        assert report["serving_version"] == 2 and str(v3) in report["failures"]


def test_admin_promote_on_a_read_only_store_is_a_clear_409(
    settings: Settings,
    read_only_store: Path,
    rows: list,  # type: ignore[type-arg]
) -> None:
    app = create_app(settings.model_copy(update={"admin_token": SecretStr("t" * 24)}))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            f"/v1/admin/models/{DEMO_MODEL}/promote",
            json={"version": 2},
            headers={"Authorization": "Bearer " + "t" * 24},
        )
        assert r.status_code == 409 and "not writable" in r.json()["error"]
        # nothing moved: v1 still serves, and the store still names v1
        assert client.post(URL, json={"instances": rows[:1]}).json()["version"] == 1
        assert ModelStore(read_only_store).resolve(DEMO_MODEL) == 1
