"""Predictions over both REST dialects equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL, demo_pipeline, holdout_mask

URL = f"/v1/models/{DEMO_MODEL}/predict"


@pytest.fixture(scope="module")
def reference(demo: tuple) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    x, y, _ = demo
    mask = holdout_mask(y)
    pipe = demo_pipeline().fit(x.to_numpy()[~mask], y[~mask])
    return pipe.predict(x.to_numpy()), pipe.predict_proba(x.to_numpy())


def test_v1_equals_scikit_learn(
    client: TestClient, rows: list, reference: tuple, demo: tuple
) -> None:  # type: ignore[type-arg]
    labels, proba = reference
    names = demo[2]
    r = client.post(URL, json={"instances": rows})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == DEMO_MODEL and body["version"] == 1
    got_labels = [p["label"] for p in body["predictions"]]
    assert got_labels == [names[i] for i in labels]
    got = np.array([[p["probabilities"][n] for n in names] for p in body["predictions"]])
    np.testing.assert_allclose(got, proba, atol=1e-5)


def test_v2_equals_scikit_learn_both_tensor_layouts(
    client: TestClient,
    demo: tuple,
    reference: tuple,  # type: ignore[type-arg]
) -> None:
    x, _, names = demo
    labels, proba = reference
    batch = x.to_numpy()[:50]
    r = client.post(
        f"/v2/models/{DEMO_MODEL}/infer",
        json={
            "id": "abc",
            "inputs": [
                {"name": "input", "shape": [50, 30], "datatype": "FP64", "data": batch.tolist()}
            ],
            "parameters": {"whatever": 1},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "abc" and body["model_version"] == "1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["label"]["data"] == [names[i] for i in labels[:50]]
    np.testing.assert_allclose(
        np.array(out["probabilities"]["data"]).reshape(50, 2), proba[:50], atol=1e-5
    )

    per_feature = [
        {"name": col, "shape": [50], "datatype": "FP32", "data": x[col].to_numpy()[:50].tolist()}
        for col in x.columns
    ]
    r2 = client.post(
        f"/v2/models/{DEMO_MODEL}/versions/1/infer",
        json={"inputs": per_feature, "outputs": [{"name": "probabilities"}]},
    )
    assert r2.status_code == 200, r2.text
    outs = r2.json()["outputs"]
    assert [o["name"] for o in outs] == ["probabilities"]
    np.testing.assert_allclose(np.array(outs[0]["data"]).reshape(50, 2), proba[:50], atol=1e-5)


def test_request_id_is_honoured_or_generated(client: TestClient, rows: list) -> None:  # type: ignore[type-arg]
    r = client.post(URL, json={"instances": rows[:1]}, headers={"X-Request-ID": "mine-1"})
    assert r.json()["request_id"] == "mine-1" and r.headers["x-request-id"] == "mine-1"
    r = client.post(URL, json={"instances": rows[:1], "id": "body-id"})
    assert r.json()["request_id"] == "body-id" and r.headers["x-request-id"] == "body-id"
    r = client.post(URL, json={"instances": rows[:1]})
    generated = r.json()["request_id"]
    assert len(generated) == 32 and r.headers["x-request-id"] == generated


def test_explicit_version_serves_that_version(client: TestClient, rows: list) -> None:  # type: ignore[type-arg]
    r1 = client.post(f"/v1/models/{DEMO_MODEL}/versions/2/predict", json={"instances": rows[:5]})
    r0 = client.post(URL, json={"instances": rows[:5]})
    assert r1.json()["version"] == 2 and r0.json()["version"] == 1
    p1 = [p["probabilities"]["benign"] for p in r1.json()["predictions"]]
    p0 = [p["probabilities"]["benign"] for p in r0.json()["predictions"]]
    assert p1 != p0  # v2 is a differently regularised model


def test_openapi_shows_real_feature_names(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    body = doc["paths"][URL.replace(DEMO_MODEL, "{model}")]["post"]["requestBody"]
    item = body["content"]["application/json"]["schema"]["properties"]["instances"]["items"]
    assert "mean_radius" in item["properties"] and len(item["required"]) == 30


def test_v2_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = client.get(f"/v2/models/{DEMO_MODEL}").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert client.get(f"/v2/models/{DEMO_MODEL}/versions/2/ready").json()["ready"] is True
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2").json()["name"] == "vigil"
