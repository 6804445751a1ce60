"""Serving a rollout: every replica follows it, a canary answers its share, a shadow is logged.

What users rely on: the candidate answers a stable share of requests (the same request id always
gets the same version); a shadow candidate never changes a client's answer, and every
acknowledged request has its shadow row beside its primary row; a candidate that cannot load is
never routed to; explicit version URLs are never rerouted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from model_store.rollout import Mode, Rollouts
from model_store.store import ModelStore
from service.app import create_app
from service.core.dataplane import SHADOW_ERROR_KEY
from service.iolog.reader import read_predictions
from service.settings import Settings
from tests.conftest import MODEL, registry_of, wait_route
from tests.faulty_model import THRESHOLD, register_faulty

URL = f"/v1/models/{MODEL}/predict"
Row = dict[str, float]


@pytest.fixture
def serving(settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _predict(client: TestClient, row: Row, rid: str, url: str = URL) -> int:
    r = client.post(url, json={"instances": [row]}, headers={"X-Request-ID": rid})
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == rid
    version: int = r.json()["version"]
    return version


def test_canary_serves_its_share_sticky_by_request_id(
    serving: tuple[FastAPI, TestClient], store: ModelStore, settings: Settings, rows: list[Row]
) -> None:
    app, client = serving
    state = Rollouts(store).start(MODEL, 2, Mode.CANARY, percent=30)
    wait_route(app, state.revision)
    versions = {f"c-{i}": _predict(client, rows[i % len(rows)], f"c-{i}") for i in range(2000)}
    share = 100 * sum(v == 2 for v in versions.values()) / len(versions)
    assert abs(share - 30) <= 4, share
    canary_id = next(k for k, v in versions.items() if v == 2)
    primary_id = next(k for k, v in versions.items() if v == 1)
    for _ in range(20):  # retries with the same id land on the same version
        assert _predict(client, rows[0], canary_id) == 2
        assert _predict(client, rows[0], primary_id) == 1
    # without an id, the generated one decides, and a retry with it gets the same version
    answers = [
        client.post(URL, json={"instances": [rows[i % len(rows)]]}).json() for i in range(400)
    ]
    assert abs(100 * sum(a["version"] == 2 for a in answers) / 400 - 30) <= 8
    for a in answers[:20]:
        assert _predict(client, rows[0], a["request_id"]) == a["version"]
    # explicit versions bypass routing
    assert _predict(client, rows[0], canary_id, f"/v1/models/{MODEL}/versions/1/predict") == 1
    assert _predict(client, rows[0], primary_id, f"/v1/models/{MODEL}/versions/2/predict") == 2
    v2 = client.post(
        f"/v2/models/{MODEL}/infer",
        json={"id": canary_id, "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                                          "data": list(rows[0].values())}]},
    )  # fmt: skip
    assert v2.status_code == 200 and v2.json()["model_version"] == "2", v2.text
    Rollouts(store).abort(MODEL)
    wait_route(app, None)
    assert _predict(client, rows[0], canary_id) == 1
    assert registry_of(app).pinned(MODEL) == {1}
    client.__exit__(None, None, None)
    df = read_predictions(settings, MODEL, with_labels=False)
    c = df[df["request_id"].str.startswith("c-")]
    assert set(c.loc[c["version"] == 2, "role"]) == {"canary"}
    assert set(c.loc[c["version"] == 1, "role"]) == {"primary"}


def _wait_logged(settings: Settings) -> pd.DataFrame:
    return read_predictions(settings, MODEL, with_labels=False)


def test_shadow_logs_both_answers_and_clients_see_the_primary(
    serving: tuple[FastAPI, TestClient], store: ModelStore, settings: Settings, rows: list[Row]
) -> None:
    app, client = serving
    state = Rollouts(store).start(MODEL, 2, Mode.SHADOW, sample=1.0)
    wait_route(app, state.revision)
    ids = [f"s-{i}" for i in range(60)]
    for i, rid in enumerate(ids):
        assert _predict(client, rows[i], rid) == 1
    big = client.post(URL, json={"instances": rows[:400]}, headers={"X-Request-ID": "s-big"})
    assert big.status_code == 200 and big.json()["version"] == 1  # threaded path (> 256 rows)
    client.__exit__(None, None, None)
    df = _wait_logged(settings)
    df = df[df["request_id"].str.startswith("s-")]
    counts = df.groupby(["request_id", "role"]).size().unstack()
    assert set(counts.index) == {*ids, "s-big"}
    assert (counts["primary"] == counts["shadow"]).all()
    assert counts.loc["s-big", "shadow"] == 400
    shadow = df[df["role"] == "shadow"]
    assert set(shadow["version"]) == {2} and set(shadow["status"]) == {200}
    assert set(df.loc[df["role"] == "primary", "version"]) == {1}


def test_sample_copies_a_stable_share(
    serving: tuple[FastAPI, TestClient], store: ModelStore, settings: Settings, rows: list[Row]
) -> None:
    app, client = serving
    state = Rollouts(store).start(MODEL, 2, Mode.SHADOW, sample=0.25)
    wait_route(app, state.revision)
    ids = [f"q-{i}" for i in range(800)]
    for i, rid in enumerate(ids):
        _predict(client, rows[i % len(rows)], rid)
    client.__exit__(None, None, None)
    df = _wait_logged(settings)
    shadowed = df.loc[(df["role"] == "shadow") & df["request_id"].str.startswith("q-")]
    assert abs(100 * len(shadowed) / len(ids) - 25) <= 5


def test_a_candidate_failing_at_run_time_never_reaches_clients(
    serving: tuple[FastAPI, TestClient], store: ModelStore, settings: Settings, rows: list[Row]
) -> None:
    app, client = serving
    faulty = register_faulty(store, MODEL, 1)
    state = Rollouts(store).start(MODEL, faulty, Mode.SHADOW)
    wait_route(app, state.revision)
    for i in range(100):
        assert _predict(client, rows[i], f"f-{i}") == 1  # every answer the primary's, all 200
    metrics = client.get("/metrics").text
    failing = sum(rows[i]["mean_radius"] <= THRESHOLD for i in range(100))
    assert failing > 10
    line = f'vigil_shadow_failures_total{{model="{MODEL}",version="{faulty}"}} {float(failing)}'
    assert line in metrics
    client.__exit__(None, None, None)
    df = _wait_logged(settings)
    shadow = df[(df["role"] == "shadow") & df["request_id"].str.startswith("f-")]
    assert len(shadow) == 100
    failed = shadow[shadow["status"] == 500]
    assert len(failed) == failing and failed["prediction"].isna().all()
    assert failed["metadata"].str.contains(SHADOW_ERROR_KEY).all()
    ok = df[(df["role"] == "primary") & df["request_id"].str.startswith("f-")]
    assert len(ok) == 100 and set(ok["status"]) == {200}


def test_a_canary_candidate_failing_at_run_time_hands_the_request_to_the_primary(
    serving: tuple[FastAPI, TestClient], store: ModelStore, settings: Settings, rows: list[Row]
) -> None:
    app, client = serving
    faulty = register_faulty(store, MODEL, 1)
    state = Rollouts(store).start(MODEL, faulty, Mode.CANARY, percent=100)
    wait_route(app, state.revision)
    for i in range(100):  # all 200: the candidate's answer where it is finite, else the primary's
        want = 1 if rows[i]["mean_radius"] <= THRESHOLD else faulty
        assert _predict(client, rows[i], f"k-{i}") == want
    failing = sum(rows[i]["mean_radius"] <= THRESHOLD for i in range(100))
    line = f'vigil_canary_fallbacks_total{{model="{MODEL}",version="{faulty}"}} {float(failing)}'
    assert line in client.get("/metrics").text
    client.__exit__(None, None, None)
    df = _wait_logged(settings)
    df = df[df["request_id"].str.startswith("k-")]
    failed = df[(df["role"] == "canary") & (df["status"] == 500)]
    assert len(failed) == failing and set(failed["version"]) == {faulty}
    assert failed["metadata"].str.contains(SHADOW_ERROR_KEY).all()
    answered = df[df["status"] == 200]
    assert len(answered) == 100 and answered["request_id"].is_unique
    assert set(answered.loc[answered["version"] == 1, "role"]) == {"primary"}
    assert set(answered.loc[answered["version"] == faulty, "role"]) == {"canary"}


def test_an_unloadable_candidate_is_never_routed_to(
    serving: tuple[FastAPI, TestClient], store: ModelStore, rows: list[Row]
) -> None:
    app, client = serving
    model_file = store.version_dir(MODEL, 2) / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:-7] + b"garbage")  # sha256 no longer matches
    Rollouts(store).start(MODEL, 2, Mode.CANARY, percent=100)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = registry_of(app).state(MODEL)
        if state is not None and 2 in state.failures:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the candidate's load was never tried")
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200  # the primary keeps serving: still ready
    assert registry_of(app).route(MODEL) is None and registry_of(app).pinned(MODEL) == {1}
    assert {_predict(client, rows[i], f"u-{i}") for i in range(50)} == {1}
    assert (
        f'vigil_model_load_failures_total{{model="{MODEL}",version="2"}}'
        in client.get("/metrics").text
    )


def test_a_candidate_missing_from_the_store_is_said_once_and_routed_when_back(
    settings: Settings, store: ModelStore, rows: list[Row], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker starting while the rollout's candidate version is missing (a store restored in
    part, a copy still under way): the primary serves everything, the error is logged once (not
    at every poll), and the route comes with the version."""
    state = Rollouts(store).start(MODEL, 2, Mode.CANARY, percent=100)
    version_dir = store.version_dir(MODEL, 2)
    hidden = version_dir.with_name("2.hidden")
    version_dir.rename(hidden)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="vigil"):
            time.sleep(10 * settings.alias_poll_s)  # ten polls
        said = [r for r in caplog.records if "not routing" in r.getMessage()]
        assert len(said) == 1 and "candidate v2" in said[0].getMessage()
        assert registry_of(app).route(MODEL) is None
        assert {_predict(client, rows[i], f"gone-{i}") for i in range(20)} == {1}
        hidden.rename(version_dir)
        wait_route(app, state.revision)
        assert {_predict(client, rows[i], f"back-{i}") for i in range(20)} == {2}


# -- real processes ---------------------------------------------------------------------------
TOKEN = "rollout-serving-token-5c2a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _version_of(url: str, rid: str, row: Row) -> int:
    import httpx

    r = httpx.post(url + URL, json={"instances": [row]}, headers={"X-Request-ID": rid})
    assert r.status_code == 200, r.text
    version: int = r.json()["version"]
    return version


def _wait_version(url: str, rid: str, row: Row, want: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _version_of(url, rid, row) != want:
        assert time.monotonic() < deadline, f"{url} never served v{want} for {rid}"
        time.sleep(0.1)


def test_two_replicas_follow_a_rollout_started_through_either(
    vigil_server: Callable[..., object], rows: list[Row]
) -> None:
    import httpx

    env = {"VIGIL_ALIAS_POLL_S": "0.2", "VIGIL_ADMIN_TOKEN": TOKEN}
    a, b = vigil_server(env=env), vigil_server(env=env)
    urls = [a.url, b.url]  # type: ignore[attr-defined]
    admin = f"/v1/admin/models/{MODEL}/rollout"
    r = httpx.post(urls[0] + admin, json={"version": 2, "mode": "canary", "percent": 100},
                   headers=AUTH)  # fmt: skip
    assert r.status_code in (200, 201), r.text
    for url in urls:
        _wait_version(url, "any", rows[0], 2)
    r = httpx.post(urls[1] + admin + "/step", json={"percent": 0.01}, headers=AUTH)
    assert r.status_code == 200, r.text
    rid = next(f"p-{i}" for i in range(100) if _version_of(urls[1], f"p-{i}", rows[0]) == 1)
    for url in urls:
        _wait_version(url, rid, rows[0], 1)
    assert httpx.post(urls[1] + admin + "/promote", headers=AUTH).status_code == 200
    for url in urls:
        _wait_version(url, rid, rows[0], 2)
        assert httpx.get(url + f"/v1/models/{MODEL}/rollout").status_code == 404


@pytest.mark.slow
def test_shadow_rows_survive_a_kill_9_under_load(
    vigil_server: Callable[..., object], store: ModelStore, home: Path, rows: list[Row]
) -> None:
    import threading

    from tests.load import run_load

    Rollouts(store).start(MODEL, 2, Mode.SHADOW)
    server = vigil_server(env={"VIGIL_FSYNC": "never"})
    stop = threading.Event()
    holder: dict[str, object] = {}
    loader = threading.Thread(
        target=lambda: holder.update(
            r=run_load(server.url, rows, threads=8, seconds=20, stop=stop)  # type: ignore[attr-defined]
        )
    )
    loader.start()
    time.sleep(1.5)
    server.kill()  # type: ignore[attr-defined]
    stop.set()
    loader.join()
    result = holder["r"]
    ok: dict[str, int] = result.ok  # type: ignore[attr-defined]
    assert len(ok) > 50 and set(result.versions) == {1}  # type: ignore[attr-defined]
    restarted = vigil_server()
    restarted.stop()  # type: ignore[attr-defined]
    settings = Settings(model_store=home / "models", data_dir=home / "data")
    df = read_predictions(settings, MODEL, with_labels=False)
    counts = df.groupby(["request_id", "role"]).size().unstack(fill_value=0)
    missing = [rid for rid in ok if rid not in counts.index]
    assert not missing, f"{len(missing)} acknowledged requests missing"
    acked = counts.loc[list(ok)]
    want = pd.Series(ok)
    assert (acked["primary"] == want).all() and (acked["shadow"] == want).all()
    assert not df.duplicated(["request_id", "row", "role"]).any()
    assert np.array_equal(df.loc[df["role"] == "shadow", "version"].unique(), [2])


# -- the automatic loop -----------------------------------------------------------------------
EVAL_S = 0.5


@pytest.fixture
def auto_serving(settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(settings.model_copy(update={"rollout_eval_s": EVAL_S}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _until_ended(client: TestClient, store: ModelStore, rows: list[Row], timeout: float) -> float:
    """Send traffic until the rollout ends and its last history entry is written; the seconds
    that took (the entry is appended just after rollout.json goes)."""
    start = time.monotonic()
    i = 0
    ending = {"rollout_abort", "rollout_promote"}
    while store.changes(MODEL)[-1].action.value not in ending:
        assert time.monotonic() - start < timeout, "the automatic loop did not act in time"
        r = client.post(URL, json={"instances": [rows[i % len(rows)]]})
        assert r.status_code == 200, r.text
        i += 1
    assert Rollouts(store).current(MODEL) is None
    return time.monotonic() - start


def test_auto_aborts_a_failing_candidate_within_the_bound(
    auto_serving: tuple[FastAPI, TestClient], store: ModelStore, rows: list[Row]
) -> None:
    app, client = auto_serving
    faulty = register_faulty(store, MODEL, 1)
    state = Rollouts(store).start(MODEL, faulty, Mode.SHADOW, auto=True)
    wait_route(app, state.revision)
    # the candidate fails on ~45 % of rows from the first request: the abort must come within
    # two evaluation intervals (plus the time to read the window)
    took = _until_ended(client, store, rows, timeout=2 * EVAL_S + 5)
    assert took <= 2 * EVAL_S + 5
    last = store.changes(MODEL)[-1]
    assert (last.action.value, last.who) == ("rollout_abort", "auto")
    assert last.gates and any(
        g["name"] == "max_error_rate" and g["verdict"] == "fail" for g in last.gates
    )
    assert store.resolve(MODEL) == 1
    wait_route(app, None)
    assert (
        f'vigil_rollout_aborts_total{{model="{MODEL}",who="auto"}} 1.0'
        in client.get("/metrics").text
    )


def test_auto_advances_through_the_schedule_to_promote(
    auto_serving: tuple[FastAPI, TestClient], store: ModelStore, rows: list[Row]
) -> None:
    _app, client = auto_serving
    gates = {"min_requests": 20, "min_duration_s": 0.0, "min_agreement": 0.5,
             "max_p99_ratio": 20.0, "metric_margin": None}  # fmt: skip
    Rollouts(store).start(MODEL, 2, Mode.SHADOW, auto=True, gates=gates)
    _until_ended(client, store, rows, timeout=60)
    assert store.resolve(MODEL) == 2
    auto = [(e.action.value, e.details.get("percent")) for e in store.changes(MODEL)[-3:]]
    assert auto == [("rollout_step", 5.0), ("rollout_step", 25.0), ("rollout_promote", 25.0)]
    assert all(e.who == "auto" and e.gates for e in store.changes(MODEL)[-3:])


def test_only_one_replica_holds_the_lease(store: ModelStore) -> None:
    from model_store.lease import acquire, release

    assert acquire(store, MODEL, "a", 30, now=1000)
    assert not acquire(store, MODEL, "b", 30, now=1010)
    assert acquire(store, MODEL, "a", 30, now=1020)  # renewed
    assert acquire(store, MODEL, "b", 30, now=1051)  # a's expired: b takes over
    release(store, MODEL, "a")  # not a's any more: nothing happens
    assert not acquire(store, MODEL, "a", 30, now=1060)


def test_an_automatic_action_on_a_stale_state_changes_nothing(
    store: ModelStore, settings: Settings
) -> None:
    from datetime import datetime

    from model_store.rollout import RolloutState
    from service.metrics import Metrics
    from service.offline import autopilot
    from service.offline.report_process import ReportProcess

    rollouts = Rollouts(store)
    stale = rollouts.start(MODEL, 2, Mode.SHADOW, auto=True)
    rollouts.step(MODEL, 10, reason="a person stepped first")

    class Abort(ReportProcess):  # a report that says abort, whatever the log holds
        def report(self, state: RolloutState, now: datetime | None = None) -> dict[str, Any]:
            return {"decision": "abort", "gate_results": []}

    pilot = autopilot.Autopilot(settings, store, Metrics(), Abort(settings))
    from datetime import UTC

    assert pilot._evaluate(stale, datetime.now(UTC)) is None
    now = rollouts.current(MODEL)
    assert now is not None and (now.revision, now.percent) == (2, 10)
    assert [e.who for e in store.changes(MODEL)][-1] != "auto"
