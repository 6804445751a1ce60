"""Who may change what is served: the admin API's token, and switching versions safely.

Admin operations need ``Authorization: Bearer <VIGIL_ADMIN_TOKEN>``; without a configured token
the admin API does not exist (404). Promote/rollback, over HTTP or through the store with the
CLI, never fail a prediction in flight, and a version that cannot load is never promoted.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.testclient import TestClient

from model_store.store import ModelStore
from service.app import create_app
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer, start_vigil

TOKEN = "admin-token-for-tests-7f3a9c"
Row = dict[str, float]

ADMIN_CALLS: list[tuple[str, dict[str, int] | None]] = [
    (f"/v1/admin/models/{MODEL}/promote", {"version": 2}),
    (f"/v1/admin/models/{MODEL}/rollback", None),
    (f"/v1/admin/models/{MODEL}/versions/2/load", None),
    (f"/v1/admin/models/{MODEL}/versions/2/unload", None),
    ("/v1/admin/reload", None),
]


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
@pytest.mark.parametrize("header", [None, f"Bearer {TOKEN}", "Bearer ", "Bearer x"])
def test_admin_api_is_absent_without_a_configured_token(
    client: TestClient, path: str, body: dict[str, int] | None, header: str | None
) -> None:
    """No VIGIL_ADMIN_TOKEN: every admin route is a 404 whatever the caller sends."""
    headers = {"Authorization": header} if header is not None else {}
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 404, r.text
    assert "admin API is disabled" in r.json()["error"]


@pytest.fixture
def admin_client(settings: Settings) -> Iterator[TestClient]:
    app: FastAPI = create_app(settings.model_copy(update={"admin_token": SecretStr(TOKEN)}))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
@pytest.mark.parametrize(
    ("header", "word"),
    [
        (None, "send Authorization: Bearer"),
        ("", "send Authorization: Bearer"),
        ("Bearer", "send Authorization: Bearer"),
        ("Bearer ", "send Authorization: Bearer"),
        (f"Basic {TOKEN}", "send Authorization: Bearer"),
        (TOKEN, "send Authorization: Bearer"),
        ("Bearer wrong-token", "wrong token"),
        (f"Bearer {TOKEN[:-1]}", "wrong token"),
        (f"Bearer {TOKEN}x", "wrong token"),
        (f"Bearer {TOKEN.upper()}", "wrong token"),
        (f"Bearer {TOKEN} {TOKEN}", "wrong token"),
    ],
)
def test_missing_or_wrong_token_is_401(
    admin_client: TestClient,
    path: str,
    body: dict[str, int] | None,
    header: str | None,
    word: str,
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = admin_client.post(path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert word in r.json()["error"]
    assert TOKEN not in r.text
    # Nothing changed: v1 still serves.
    assert admin_client.get(f"/v2/models/{MODEL}/ready").json()["version"] == "1"


def test_correct_token_runs_each_admin_operation(admin_client: TestClient, rows: list[Row]) -> None:
    auth = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive (RFC 7235)

    def served() -> int:
        r = admin_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [rows[0]]})
        assert r.status_code == 200, r.text
        return int(r.json()["version"])

    r = admin_client.post(f"/v1/admin/models/{MODEL}/versions/2/load", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": MODEL, "version": 2, "loaded": True}
    r = admin_client.post(f"/v1/admin/models/{MODEL}/versions/2/unload", headers=auth)
    assert r.json() == {"model": MODEL, "version": 2, "loaded": False}
    r = admin_client.post(f"/v1/admin/models/{MODEL}/promote", json={"version": 2}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": MODEL, "serving_version": 2, "previous_version": 1}
    assert served() == 2
    # The served default cannot be unloaded from under the traffic.
    r = admin_client.post(f"/v1/admin/models/{MODEL}/versions/2/unload", headers=auth)
    assert r.status_code == 409, r.text
    r = admin_client.post(f"/v1/admin/models/{MODEL}/rollback", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"model": MODEL, "serving_version": 1}
    assert served() == 1
    r = admin_client.post("/v1/admin/reload", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["models"][MODEL]["serving_version"] == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "word"),
    [
        (f"/v1/admin/models/{MODEL}/promote", {"version": 9}, 404, "no version 9"),
        (f"/v1/admin/models/{MODEL}/promote", {"version": "2"}, 422, "version"),
        (f"/v1/admin/models/{MODEL}/promote", {"version": 2.0}, 422, "version"),
        (f"/v1/admin/models/{MODEL}/promote", {"version": True}, 422, "version"),
        (f"/v1/admin/models/{MODEL}/promote", {}, 422, "version"),
        (f"/v1/admin/models/{MODEL}/promote", [2], 422, "expected a JSON object"),
        ("/v1/admin/models/nope/promote", {"version": 1}, 404, "not in the store"),
        ("/v1/admin/models/nope/rollback", None, 404, "not in the store"),
        (f"/v1/admin/models/{MODEL}/rollback", None, 422, "nothing to roll back"),
        ("/v1/admin/models/nope/versions/1/load", None, 404, "not"),
        (f"/v1/admin/models/{MODEL}/versions/x/load", None, 404, "integers"),
        (f"/v1/admin/models/{MODEL}/versions/5/unload", None, 404, "not loaded"),
        (f"/v1/admin/models/{MODEL}/versions/1/unload", None, 409, "served default"),
    ],
)
def test_bad_admin_requests_get_precise_4xx(
    admin_client: TestClient, path: str, body: object, status: int, word: str
) -> None:
    r = admin_client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == status, r.text
    assert word in r.json()["error"]
    # A refused request leaves nothing behind: the server is ready and v1 serves.
    ready = admin_client.get("/v2/health/ready")
    assert ready.status_code == 200, ready.text
    assert list(ready.json()["models"]) == [MODEL]


def test_promote_body_limits(admin_client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"/v1/admin/models/{MODEL}/promote"
    big = admin_client.post(
        url, content=b'{"version": 2, "x": "' + b"a" * 70_000 + b'"}', headers=auth
    )
    assert big.status_code == 413, big.text
    text = admin_client.post(url, content=b"2", headers={**auth, "content-type": "text/plain"})
    assert text.status_code == 415, text.text


@pytest.mark.parametrize(("chars", "status"), [(2000, 200), (2001, 422)])
def test_the_longest_reason_is_never_cut_off_by_the_body_limit(
    admin_client: TestClient, chars: int, status: int
) -> None:
    """2000 astral characters as JSON escapes are ~24 KB: valid, so never a 413; one more is
    a 422 naming the field (a 413 there hid the field, and the fuzzer caught it)."""
    reason = "\\ud83d\\ude00" * chars
    body = f'{{"version": 2, "reason": "{reason}"}}'.encode()
    r = admin_client.post(
        f"/v1/admin/models/{MODEL}/promote",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["error"].startswith("reason:"), r.text


# -- live servers ----------------------------------------------------------------------------


def _admin(server: VigilServer, path: str, body: object = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


class Traffic:
    """Threads predicting continuously; records every status and served version."""

    def __init__(self, url: str, row: Row, threads: int = 3) -> None:
        self.url, self.row = url, row
        self.results: list[tuple[float, int, int | None]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.post(self.url, json={"instances": [self.row]})
                    status, version = r.status_code, r.json().get("version")
                except httpx.HTTPError:
                    status, version = -1, None
                with self._lock:
                    self.results.append((sent, status, version))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def versions_sent_after(self, t0: float) -> set[int | None]:
        with self._lock:
            return {v for sent, _, v in self.results if sent > t0}

    def wait_for_version(self, version: int, since: float, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(v == version for sent, _, v in self.results if sent > since):
                    return
            time.sleep(0.05)
        raise AssertionError(f"v{version} not served within {timeout}s")


@pytest.fixture
def admin_server(home: Path) -> Iterator[VigilServer]:
    server = start_vigil(home, env={"VIGIL_ADMIN_TOKEN": TOKEN, "VIGIL_ALIAS_POLL_S": "0.2"})
    yield server
    server.stop()


def test_promote_and_rollback_under_load_fail_no_request(
    admin_server: VigilServer, rows: list[Row], home: Path
) -> None:
    url = f"{admin_server.url}/v1/models/{MODEL}/predict"
    with Traffic(url, rows[0]) as traffic:
        time.sleep(0.3)
        for version, call in [
            (2, lambda: _admin(admin_server, f"/v1/admin/models/{MODEL}/promote", {"version": 2})),
            (1, lambda: _admin(admin_server, f"/v1/admin/models/{MODEL}/rollback")),
            (2, lambda: _admin(admin_server, f"/v1/admin/models/{MODEL}/promote", {"version": 2})),
        ]:
            r = call()
            assert r.status_code == 200, r.text
            done = time.monotonic()
            time.sleep(0.3)
            # One worker: once the admin call has answered, every new request gets the new version.
            assert traffic.versions_sent_after(done) == {version}
        # The CLI changes the store; the server follows the alias within VIGIL_ALIAS_POLL_S.
        cli = subprocess.run(
            [sys.executable, "-m", "service.cli", "models", "rollback", MODEL],
            env=admin_server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        traffic.wait_for_version(1, since=time.monotonic())
        cli = subprocess.run(
            [sys.executable, "-m", "service.cli", "models", "promote", MODEL, "2"],
            env=admin_server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        traffic.wait_for_version(2, since=time.monotonic())
        time.sleep(0.3)
    failed = [(status, v) for _, status, v in traffic.results if status != 200]
    assert not failed, f"{len(failed)} of {len(traffic.results)} predictions failed: {failed[:5]}"
    assert len(traffic.results) > 50
    assert ModelStore(home / "models").aliases(MODEL)["production"] == 2


def test_a_corrupt_version_is_never_promoted(
    admin_server: VigilServer, rows: list[Row], home: Path
) -> None:
    onnx = home / "models" / MODEL / "2" / "model.onnx"
    with onnx.open("ab") as fh:
        fh.write(b"tampered")
    url = f"{admin_server.url}/v1/models/{MODEL}/predict"
    with Traffic(url, rows[0], threads=2) as traffic:
        r = _admin(admin_server, f"/v1/admin/models/{MODEL}/promote", {"version": 2})
        assert r.status_code == 503, r.text
        assert "sha256" in r.json()["error"]
        assert "does not match" in r.json()["error"]
        r = _admin(admin_server, f"/v1/admin/models/{MODEL}/versions/2/load")
        assert r.status_code == 503, r.text
        # Through the store, the CLI refuses it too, and the alias does not move.
        cli = subprocess.run(
            [sys.executable, "-m", "service.cli", "models", "promote", MODEL, "2"],
            env=admin_server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1
        assert "does not match" in cli.stderr
        time.sleep(0.5)
    assert {status for _, status, _ in traffic.results} == {200}
    assert {v for _, _, v in traffic.results} == {1}
    assert ModelStore(home / "models").aliases(MODEL)["production"] == 1
    ready = httpx.get(f"{admin_server.url}/v2/health/ready", timeout=5)
    # v1 serves: ready, and readiness says why v2 was refused.
    assert ready.status_code == 200, ready.text + admin_server.log()[-4000:]
    state = ready.json()["models"][MODEL]
    assert state["serving_version"] == 1
    assert "sha256" in state["failures"]["2"]
    metrics = httpx.get(f"{admin_server.url}/metrics", timeout=5).text
    assert f'vigil_model_load_failures_total{{model="{MODEL}",version="2"}} 2.0' in metrics
    assert "refusing to load" in admin_server.log()


def test_the_token_never_leaks(admin_server: VigilServer, rows: list[Row], home: Path) -> None:
    """Not in error bodies, logs, metrics or the I/O log, whatever the callers did."""
    for header in [f"Bearer {TOKEN}", f"Bearer {TOKEN}-wrong", f"Basic {TOKEN}", "Bearer nope"]:
        for path, body in ADMIN_CALLS:
            r = httpx.post(
                f"{admin_server.url}{path}", json=body, headers={"Authorization": header}
            )
            assert TOKEN not in r.text
    # Requests that fail elsewhere while carrying the header.
    r = httpx.post(
        f"{admin_server.url}/v1/models/{MODEL}/predict",
        content=b"{bad json",
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert r.status_code == 400 and TOKEN not in r.text
    r = _admin(admin_server, f"/v1/admin/models/{MODEL}/promote", {"version": 99})
    assert r.status_code == 404 and TOKEN not in r.text
    metrics = httpx.get(f"{admin_server.url}/metrics", timeout=5).text
    assert TOKEN not in metrics
    time.sleep(1.0)  # let the I/O log deliver what it spooled
    admin_server.stop()
    assert TOKEN not in admin_server.log()
    leaked = [
        p for p in (home / "data").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()
    ]
    assert not leaked
