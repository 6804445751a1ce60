"""PII in refused requests: the rejected log never holds a value the model's policy names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from model_store.demo import demo_data, demo_pipeline, holdout_mask
from model_store.manifest import PiiPolicy
from model_store.registration import register_sklearn
from model_store.store import ModelStore
from service.app import create_app
from service.iolog.reader import read_predictions, read_rejected
from service.settings import OnLogFailure, Settings

MODEL = "pii-model"
URL = f"/v1/models/{MODEL}/predict"
RADIUS, EMAIL = 17.123456789, "jane@example.org"
CLEAR = ("17.123456789", "1.7123456789e+39", "1.71235e+39", EMAIL, "cust-998877")


@pytest.fixture
def pii_settings(home: Path, store: ModelStore) -> Settings:
    x, y, names = demo_data()
    mask = holdout_mask(y)
    pipe = demo_pipeline().fit(x.to_numpy()[~mask], y[~mask])
    register_sklearn(
        store, MODEL, pipe, x, y, holdout_mask=mask, class_names=names,
        pii={"mean_radius": PiiPolicy.HASH}, metadata_pii={"email": PiiPolicy.DROP},
    )  # fmt: skip
    return Settings(
        model_store=home / "models", data_dir=home / "data", pii_secret="k" * 32,
        compact_interval_s=0.1, spool_segment_seconds=0.1,
    )  # fmt: skip


@pytest.fixture
def row() -> dict[str, Any]:
    x, _, _ = demo_data()
    return {**x.iloc[0].to_dict(), "mean_radius": RADIUS}


def _assert_nowhere(settings: Settings, texts: tuple[str, ...] = CLEAR) -> None:
    rejected = read_rejected(settings).to_csv()
    for raw in texts:
        assert raw not in rejected, f"{raw} in the rejected log"
        hits = [
            p for p in settings.data_dir.rglob("*") if p.is_file() and raw in p.read_text("latin-1")
        ]
        assert not hits, f"{raw} found in {hits}"


def test_rejected_requests_of_a_pii_model_keep_no_clear_value(
    pii_settings: Settings, row: dict[str, Any]
) -> None:
    missing = {k: v for k, v in row.items() if k != "mean_area"}
    meta = {"metadata": {"email": EMAIL, "customer": "cust-998877"}}
    bodies: list[tuple[str, bytes | dict[str, Any], int]] = [
        (URL, {"instances": [missing], **meta}, 422),  # a missing field
        (URL, {"instances": [{**row, "mean_radius": str(RADIUS)}], **meta}, 422),  # a string
        (URL, {"instances": [{**row, "mean_radius": 1.7123456789e39}]}, 422),  # out of range
        (URL, b'{"instances": [{"mean_radius": 17.123456789, "email": "jane@example.org"', 400),
        (f"/v1/models/{MODEL}/versions/1/predict", {"instances": [missing]}, 422),
        (f"/v1/models/{MODEL}/versions/7/predict", {"instances": [row], **meta}, 404),
        ("/v1/models/no-such-model/predict", {"instances": [row], **meta}, 404),
    ]
    with TestClient(create_app(pii_settings)) as client:
        for url, body, status in bodies:
            r = (
                client.post(url, content=body, headers={"Content-Type": "application/json"})
                if isinstance(body, bytes)
                else client.post(url, json=body)
            )
            assert r.status_code == status, r.text
        # An unknown version is the client's mistake, not a policy that failed to read.
        assert 'vigil_iolog_failures_total{stage="pii_policy"} 0.0' in client.get("/metrics").text
        rejected = read_rejected(pii_settings)
    assert len(rejected) == len(bodies)
    assert rejected["body"].str.fullmatch(r"<withheld: \d+ bytes, hmac-sha256 [0-9a-f]{64}>").all()
    errors = rejected["error"].tolist()
    assert "instances[0]: missing feature 'mean_area'" in errors  # what went wrong stays
    assert "instances[0].mean_radius: (detail withheld: PII policy)" in errors
    _assert_nowhere(pii_settings)


def test_an_unreadable_manifest_fails_closed_and_is_not_cached(
    pii_settings: Settings, row: dict[str, Any]
) -> None:
    manifest = pii_settings.model_store / MODEL / "1" / "manifest.json"
    good = manifest.read_bytes()
    with TestClient(create_app(pii_settings), raise_server_exceptions=False) as client:
        manifest.write_text("{ not json")  # after the model loaded: the log reads it again
        missing = {k: v for k, v in row.items() if k != "mean_area"}
        assert client.post(URL, json={"instances": [missing]}).status_code == 422
        r = client.post(URL, json={"instances": [row]})
        assert r.status_code == 503 and "PII policy" in r.json()["error"]
        manifest.write_bytes(good)
        assert client.post(URL, json={"instances": [row]}).status_code == 200
        df = read_predictions(pii_settings, MODEL)
        metrics = client.get("/metrics").text
    assert len(df) == 1 and len(df.loc[0, "mean_radius"]) == 64  # hashed, not a cached "no rules"
    # Read and failed three times (never cached): the 422, the 503 and the 503's own record.
    assert 'vigil_iolog_failures_total{stage="pii_policy"} 3.0' in metrics
    assert read_rejected(pii_settings)["body"].str.startswith("<withheld: ").all()
    _assert_nowhere(pii_settings)


def test_a_model_without_pii_keeps_the_body_excerpt(
    client: TestClient, settings: Settings, row: dict[str, Any]
) -> None:
    body = {"instances": [{k: v for k, v in row.items() if k != "mean_area"}]}
    assert client.post("/v1/models/breast-cancer/predict", json=body).status_code == 422
    assert "17.123456789" in read_rejected(settings).loc[0, "body"]


def test_with_on_log_failure_serve_an_unknown_policy_serves_unlogged(
    pii_settings: Settings, row: dict[str, Any]
) -> None:
    settings = pii_settings.model_copy(update={"on_log_failure": OnLogFailure.SERVE})
    manifest = settings.model_store / MODEL / "1" / "manifest.json"
    with TestClient(create_app(settings)) as client:
        manifest.write_text("{ not json")
        assert client.post(URL, json={"instances": [row, row]}).status_code == 200
        metrics = client.get("/metrics").text
    assert "vigil_iolog_unlogged_records_total 2.0" in metrics
    assert read_predictions(settings, MODEL).empty
    _assert_nowhere(settings)
