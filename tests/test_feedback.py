"""``POST /v1/feedback``: who may send labels (VIGIL_FEEDBACK_TOKEN), and their history.

Every label is kept with its time and source (``token`` or ``anonymous``); the latest per row is
the one readers use, and ``vigil logs feedback`` shows the history, so that a wrong label can be
seen and undone by sending the right one again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli.main import app as cli
from service.iolog.reader import read_feedback, read_predictions
from service.settings import Settings
from tests.conftest import MODEL

TOKEN = "feedback-token-for-tests-51c2e8"
PREDICT = f"/v1/models/{MODEL}/predict"
Row = dict[str, float]
SEND = "send Authorization: Bearer <VIGIL_FEEDBACK_TOKEN>"


def _with_token(settings: Settings) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "feedback_token": TOKEN})


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    app = create_app(_with_token(settings))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _label(label: str) -> list[dict[str, object]]:
    return [{"request_id": "fb-1", "row": 0, "label": label}]


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, SEND),
        ({"Authorization": f"Basic {TOKEN}"}, SEND),
        ({"Authorization": "Bearer "}, SEND),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong token"),
    ],
    ids=["none", "basic", "empty", "longer", "shorter"],
)
def test_with_a_token_set_feedback_without_it_is_401(
    guarded: TestClient, headers: dict[str, str], words: str
) -> None:
    r = guarded.post("/v1/feedback", json=_label("benign"), headers=headers)
    assert r.status_code == 401, r.text
    assert r.json() == {"error": f"feedback: {words}"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in r.text


def test_the_token_is_a_secret_never_printed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_FEEDBACK_TOKEN", TOKEN)
    from_env = Settings(model_store=settings.model_store, data_dir=settings.data_dir)
    assert from_env.feedback_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(from_env) and TOKEN not in str(from_env.model_dump())


def test_two_labels_for_a_row_are_both_kept_and_the_latest_is_used(
    guarded: TestClient, settings: Settings, rows: list[Row], tmp_path: Path
) -> None:
    r = guarded.post(PREDICT, json={"instances": rows[:1]}, headers={"X-Request-ID": "fb-1"})
    assert r.status_code == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for label in ("malignant", "benign"):
        r = guarded.post("/v1/feedback", json=_label(label), headers=auth)
        assert r.json() == {"accepted": 1}
    history = read_feedback(settings, MODEL)
    assert history[["label", "source"]].values.tolist() == [
        ["malignant", "token"],
        ["benign", "token"],
    ]
    assert read_predictions(settings, MODEL)["label"].tolist() == ["benign"]
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    out = tmp_path / "history.csv"
    args = ["logs", "feedback", "--model", MODEL, "--request-id", "fb-1"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "2 labels" in result.output and "1 superseded" in result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "request_id,row,label,received_at,source,in_force"
    assert [line.split(",")[2::3] for line in lines[1:]] == [
        ["malignant", "False"],
        ["benign", "True"],
    ]


def test_without_a_token_labels_are_anonymous(client: TestClient, settings: Settings) -> None:
    assert client.post("/v1/feedback", json=_label("benign")).json() == {"accepted": 1}
    assert read_feedback(settings, MODEL)["source"].tolist() == ["anonymous"]
