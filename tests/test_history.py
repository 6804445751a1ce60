"""The audit trail: every change of what is served is in ``<store>/<model>/history.jsonl``.

Users rely on it to answer "who changed production, when, from what, and why" — from the CLI
(`vigil models history`), over HTTP (`GET /v1/models/{m}/history`), and after a crash.
"""

from __future__ import annotations

import itertools
import json
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
from typer.testing import CliRunner

from model_store.errors import ModelNotFoundError, StoreReadOnlyError
from model_store.history import HISTORY_FILE, Action
from model_store.store import ModelStore
from service.app import create_app
from service.cli.main import app as cli
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import start_vigil

TOKEN = "history-token-for-tests-51c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_train_demo_records_the_first_promote(store: ModelStore) -> None:
    [first] = store.changes(MODEL)
    assert (first.who, first.action, first.from_version, first.to_version) == (
        "cli", Action.PROMOTE, None, 1,
    )  # fmt: skip
    assert first.at.utcoffset() is not None and first.at.utcoffset().total_seconds() == 0


def test_promote_and_rollback_are_recorded_with_who_and_why(store: ModelStore) -> None:
    store.set_alias(MODEL, 2, who="alice", reason="better recall")
    store.set_alias(MODEL, 2)  # no change, no entry
    store.rollback(MODEL, reason="latency")
    entries = store.changes(MODEL)
    assert [(e.action, e.from_version, e.to_version, e.who, e.reason) for e in entries[1:]] == [
        (Action.PROMOTE, 1, 2, "alice", "better recall"),
        (Action.ROLLBACK, 2, 1, "cli", "latency"),
    ]
    assert [e.at for e in entries] == sorted(e.at for e in entries)  # newest last
    assert [e.action for e in store.changes(MODEL, limit=1)] == [Action.ROLLBACK]


def test_unknown_model_has_no_history(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError):
        store.changes("nope")


def test_concurrent_writers_never_interleave(store: ModelStore) -> None:
    """Eight threads, each with its own store object (its own lock file handle), promote in
    turn: every change is one whole line and the alias history agrees with the audit trail."""
    barrier = threading.Barrier(8)

    def flip(target: int) -> None:
        own = ModelStore(store.root)
        barrier.wait()
        for _ in range(15):
            own.set_alias(MODEL, target, who=f"t{target}", reason="x" * 3000)  # > PIPE_BUF

    threads = [threading.Thread(target=flip, args=(1 + i % 2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (store.root / MODEL / HISTORY_FILE).read_text().splitlines()
    assert all(json.loads(line)["action"] == "promote" for line in lines)
    entries = store.changes(MODEL)
    assert len(entries) == len(lines)
    # each entry moves from the previous entry's version: no lost or reordered update
    for before, after in itertools.pairwise(entries):
        assert after.from_version == before.to_version
    assert store.history(MODEL)[1:] == [e.to_version for e in entries[1:]]


def test_a_line_torn_by_a_crash_is_skipped(store: ModelStore) -> None:
    with (store.root / MODEL / HISTORY_FILE).open("a") as fh:
        fh.write('{"at": "2026-01-01T00:00:00Z", "who": "cli", "act')  # no newline: a crash
    store.set_alias(MODEL, 2)  # starts a line of its own after the torn bytes
    entries = store.changes(MODEL)
    assert [(e.from_version, e.to_version) for e in entries] == [(None, 1), (1, 2)]


def test_history_that_cannot_be_written_leaves_the_alias_unmoved(store: ModelStore) -> None:
    """All or nothing: an alias never moves without its history entry."""
    path = store.root / MODEL / HISTORY_FILE
    path.unlink()
    path.mkdir()  # appending now fails with IsADirectoryError
    with pytest.raises(StoreReadOnlyError, match="not writable"):
        store.set_alias(MODEL, 2)
    assert store.resolve(MODEL) == 1
    assert store.history(MODEL) == [1]


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(settings: Settings) -> Iterator[TestClient]:
    app: FastAPI = create_app(
        settings.model_copy(update={"admin_token": SecretStr(TOKEN), "admin_name": "ops-team"})
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_history_over_http(admin_client: TestClient) -> None:
    url = f"/v1/models/{MODEL}/history"
    r = admin_client.post(
        f"/v1/admin/models/{MODEL}/promote", json={"version": 2, "reason": "A/B won"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    r = admin_client.post(
        f"/v1/admin/models/{MODEL}/rollback", json={"reason": "pager"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    body = admin_client.get(url).json()
    assert [(e["who"], e["action"], e["to_version"], e["reason"]) for e in body] == [
        ("cli", "promote", 1, None),
        ("ops-team", "promote", 2, "A/B won"),
        ("ops-team", "rollback", 1, "pager"),
    ]
    assert [e["action"] for e in admin_client.get(url, params={"limit": 1}).json()] == ["rollback"]
    bad = admin_client.get(url, params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.json()["error"]
    missing = admin_client.get("/v1/models/nope/history")
    assert missing.status_code == 404 and "not in the store" in missing.json()["error"]


def test_a_model_without_changes_has_an_empty_history(admin_client: TestClient, home: Path) -> None:
    (home / "models" / MODEL / HISTORY_FILE).unlink()
    r = admin_client.get(f"/v1/models/{MODEL}/history")
    assert r.status_code == 200 and r.json() == []


def test_reason_must_be_text(admin_client: TestClient) -> None:
    r = admin_client.post(
        f"/v1/admin/models/{MODEL}/promote", json={"version": 2, "reason": 5}, headers=AUTH
    )
    assert r.status_code == 422 and "reason" in r.json()["error"]
    r = admin_client.post(f"/v1/admin/models/{MODEL}/rollback", json={"why": "x"}, headers=AUTH)
    assert r.status_code == 422 and "why: unknown field" in r.json()["error"]


# -- CLI -------------------------------------------------------------------------------------


def test_cli_promote_rollback_and_history(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_MODEL_STORE", str(home / "models"))
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["models", "promote", MODEL, "2", "--reason", "retrained"]).exit_code
        == 0
    )
    assert runner.invoke(cli, ["models", "rollback", MODEL, "--reason", "oops"]).exit_code == 0
    result = runner.invoke(cli, ["models", "history", MODEL, "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [(e["action"], e["reason"]) for e in entries[1:]] == [
        ("promote", "retrained"), ("rollback", "oops"),
    ]  # fmt: skip
    table = runner.invoke(cli, ["models", "history", MODEL])
    assert table.exit_code == 0 and "retrained" in table.stdout and "rollback" in table.stdout
    missing = runner.invoke(cli, ["models", "history", "nope"])
    assert missing.exit_code == 1


def test_a_read_only_store_refuses_every_change_and_writes_no_history(
    settings: Settings, read_only_store: Path
) -> None:
    app = create_app(settings.model_copy(update={"admin_token": SecretStr(TOKEN)}))
    before = (read_only_store / MODEL / HISTORY_FILE).read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        for path, body in [
            ("promote", {"version": 2, "reason": "x"}),
            ("rollout", {"version": 2, "mode": "shadow"}),
        ]:
            r = client.post(f"/v1/admin/models/{MODEL}/{path}", json=body, headers=AUTH)
            assert r.status_code == 409 and "not writable" in r.json()["error"], r.text
        assert client.get(f"/v1/models/{MODEL}/history").status_code == 200  # reads still work
    assert (read_only_store / MODEL / HISTORY_FILE).read_bytes() == before
    assert ModelStore(read_only_store).resolve(MODEL) == 1
    assert not (read_only_store / MODEL / "rollout.json").exists()


def test_a_live_server_follows_a_rollout_promoted_from_the_cli(
    home: Path, rows: list[dict[str, float]]
) -> None:
    """The rollout is started over HTTP on a real server and promoted from the command line
    (the store); the server follows the alias it moved, and the history tells the story."""
    server = start_vigil(
        home,
        env={"VIGIL_ADMIN_TOKEN": TOKEN, "VIGIL_ADMIN_NAME": "ops", "VIGIL_ALIAS_POLL_S": "0.2"},
    )
    try:
        r = httpx.post(
            f"{server.url}/v1/admin/models/{MODEL}/rollout",
            json={"version": 2, "mode": "canary", "percent": 5, "reason": "retrained"},
            headers=AUTH,
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert (
            httpx.get(f"{server.url}/v1/models/{MODEL}/rollout", timeout=30).json()["percent"] == 5
        )
        env = {**server.env, "VIGIL_MODEL_STORE": str(home / "models")}
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "rollout", "promote", MODEL, "--reason", "gates ok"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        version = None
        while time.monotonic() < deadline and version != 2:
            version = httpx.post(
                f"{server.url}/v1/models/{MODEL}/predict", json={"instances": rows[:1]}, timeout=30
            ).json()["version"]
            time.sleep(0.1)
        assert version == 2
        history = httpx.get(f"{server.url}/v1/models/{MODEL}/history", timeout=30).json()
        assert [(e["who"], e["action"], e["reason"]) for e in history[1:]] == [
            ("ops", "rollout_start", "retrained"), ("cli", "rollout_promote", "gates ok"),
        ]  # fmt: skip
        gone = httpx.get(f"{server.url}/v1/models/{MODEL}/rollout", timeout=30)
        assert gone.status_code == 404
    finally:
        server.stop()
