"""Who may open the console (/ui), over HTTP: the token login, its cookie, CSRF on every form,
and the cases where the console is off (production without a token, not on loopback,
VIGIL_UI_ENABLED=false). Errors are pages, not stack traces or JSON."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from model_store.store import ModelStore
from service.app import create_app
from service.settings import Environment, Settings
from service.ui import access
from tests.conftest import MODEL
from tests.servers import start_vigil

TOKEN = "console-token-for-tests-51c2e8"


def _client(settings: Settings, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)), raise_server_exceptions=False)


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    with _client(settings, admin_token=SecretStr(TOKEN)) as c:
        yield c


def _csrf(client: TestClient, path: str) -> str:
    page = client.get(path, follow_redirects=False)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _login(client: TestClient) -> None:
    r = client.post(
        "/ui/login",
        data={"token": TOKEN, "csrf": _csrf(client, "/ui/login"), "next": "/ui"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text


@pytest.mark.parametrize(
    "path",
    ["/ui", f"/ui/models/{MODEL}", f"/ui/models/{MODEL}/drift", f"/ui/models/{MODEL}/traffic",
     f"/ui/models/{MODEL}/logs", f"/ui/models/{MODEL}/logs/export.csv",
     f"/ui/models/{MODEL}/backtest"],
)  # fmt: skip
def test_every_page_and_download_needs_the_login(guarded: TestClient, path: str) -> None:
    r = guarded.get(path, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/ui/login?next=")
    guarded.cookies.set(access.SESSION_COOKIE, "1.2.3")  # a forged session is no session
    assert guarded.get(path, follow_redirects=False).status_code == 303


def test_a_wrong_token_is_refused_and_the_right_one_opens_a_strict_httponly_session(
    guarded: TestClient,
) -> None:
    csrf = _csrf(guarded, "/ui/login")
    wrong = guarded.post("/ui/login", data={"token": "nope", "csrf": csrf}, follow_redirects=False)
    assert wrong.status_code == 401 and "console: wrong token" in wrong.text
    assert access.SESSION_COOKIE not in guarded.cookies
    r = guarded.post("/ui/login", data={"token": TOKEN, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    cookie = next(
        h for h in r.headers.get_list("set-cookie") if h.startswith(access.SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    page = guarded.get("/ui")
    assert page.status_code == 200 and f'href="/ui/models/{MODEL}"' in page.text


def test_forms_without_the_sessions_csrf_token_are_refused(
    guarded: TestClient, store: ModelStore
) -> None:
    assert guarded.post("/ui/login", data={"token": TOKEN}).status_code == 403
    _login(guarded)
    form = {"version": "2", "token": TOKEN}
    for csrf in (None, "0" * 64, access.csrf_token("another key", "x")):
        data = form if csrf is None else {**form, "csrf": csrf}
        r = guarded.post(f"/ui/models/{MODEL}/promote", data=data, follow_redirects=False)
        assert r.status_code == 403 and "csrf:" in r.text
    assert store.resolve(MODEL) == 1  # nothing was promoted


def test_a_form_without_a_session_is_401(guarded: TestClient, store: ModelStore) -> None:
    csrf = _csrf(guarded, "/ui/login")  # a CSRF cookie, but no login
    r = guarded.post(f"/ui/models/{MODEL}/promote", data={"version": "2", "csrf": csrf})
    assert r.status_code == 401 and store.resolve(MODEL) == 1


def test_promote_shows_the_admin_apis_error_verbatim_and_then_promotes(
    guarded: TestClient, store: ModelStore
) -> None:
    _login(guarded)
    csrf = _csrf(guarded, f"/ui/models/{MODEL}")
    api = guarded.post(
        f"/v1/admin/models/{MODEL}/promote", json={"version": 2},
        headers={"Authorization": "Bearer wrong"},
    )  # fmt: skip
    assert api.status_code == 401
    data = {"version": "2", "token": "wrong", "csrf": csrf, "reason": "test"}
    r = guarded.post(f"/ui/models/{MODEL}/promote", data=data)
    assert r.status_code == 401
    assert f"promote failed: 401 {api.json()['error']}" in r.text
    assert store.resolve(MODEL) == 1
    r = guarded.post(
        f"/ui/models/{MODEL}/promote", data={**data, "token": TOKEN}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert store.resolve(MODEL) == 2
    assert store.changes(MODEL)[-1].reason == "test"
    r = guarded.post(f"/ui/models/{MODEL}/rollback", data={"token": TOKEN, "csrf": csrf})
    assert r.status_code == 200 and "rolled breast-cancer back to v1" in r.text
    assert store.resolve(MODEL) == 1


def test_without_a_token_the_console_is_open_on_loopback_in_development(
    settings: Settings,
) -> None:
    with _client(settings) as c:
        r = c.get("/ui")
        assert r.status_code == 200 and MODEL in r.text and "Sign out" not in r.text
        csrf = _csrf(c, f"/ui/models/{MODEL}")
        r = c.post(f"/ui/models/{MODEL}/promote", data={"version": "2", "csrf": csrf})
        assert r.status_code == 404 and "the admin API is disabled" in r.text


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"environment": Environment.PRODUCTION, "train_demo_if_empty": False},
         "in production it needs VIGIL_ADMIN_TOKEN"),
        ({"host": "0.0.0.0"}, "bound to 0.0.0.0"),
        ({"ui_enabled": False, "admin_token": SecretStr(TOKEN)}, "VIGIL_UI_ENABLED=false"),
    ],
)  # fmt: skip
def test_the_console_is_off_with_a_page_that_says_why(
    settings: Settings, update: dict[str, object], reason: str
) -> None:
    with _client(settings, **update) as c:
        for path in ("/ui", "/ui/login", f"/ui/models/{MODEL}/logs/export.csv",
                     "/ui/static/console.css"):  # fmt: skip
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 404 and reason in r.text, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
        assert c.get("/v2/health/live").status_code == 200  # the service itself still runs


def test_ui_enabled_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("VIGIL_UI_ENABLED", "false")
    assert access.access(Settings(model_store=home / "models")).mode is access.Mode.OFF


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/ui/models/nope", 404, "model &#39;nope&#39; is not in the store"),
        (f"/ui/models/{MODEL}/logs?since=yesterday", 422, "since: &#39;yesterday&#39; is not"),
        (f"/ui/models/{MODEL}/logs?version=x", 422, "version: &#39;x&#39; is not a version"),
        (f"/ui/models/{MODEL}/traffic?window=3y", 422, "window: &#39;3y&#39; is not one of"),
        (f"/ui/models/{MODEL}/drift/x/manifest.json", 404, "drift.html and drift.json"),
        (f"/ui/models/{MODEL}/drift/x/..%2F..%2Fmanifest.json", 404, "no console page"),
        (f"/ui/models/{MODEL}/drift/nope/drift.json", 404, "has no drift run"),
        ("/ui/backtests/20260101T000000Z-00000g", 404, "no back-test"),
    ],
)
def test_errors_are_pages_naming_the_field(
    settings: Settings, path: str, status: int, message: str
) -> None:
    with _client(settings) as c:
        r = c.get(path)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("text/html") and message in r.text
        assert "Traceback" not in r.text


def test_serve_host_option_reaches_the_consoles_check(home: Path) -> None:
    """`vigil serve --host 0.0.0.0` without a token: the workers' settings see the bind address,
    so the console is off rather than open to the network."""
    server = start_vigil(
        home, args=[sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0"]
    )
    try:
        r = httpx.get(server.url + "/ui", timeout=10)
        assert r.status_code == 404 and "bound to 0.0.0.0" in r.text
    finally:
        server.stop()
