"""V2 ``/infer`` refuses malformed tensors with a 4xx naming the tensor, field and problem."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import MODEL

URL = f"/v2/models/{MODEL}/infer"
N = 30  # features of the demo model
Row = dict[str, float]


def _matrix(rows: list[Row], n_rows: int = 2) -> list[float]:
    return [v for row in rows[:n_rows] for v in row.values()]


def _tensor(rows: list[Row], **changes: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": "input", "datatype": "FP64", "shape": [2, N]}
    t["data"] = _matrix(rows)
    t.update(changes)
    return t


def _per_feature(rows: list[Row], skip: str = "", **extra: Any) -> list[dict[str, Any]]:
    tensors = [
        {"name": name, "datatype": "FP32", "shape": [2], "data": [rows[0][name], rows[1][name]]}
        for name in rows[0]
        if name != skip
    ]
    tensors += [{"datatype": "FP32", "shape": [2], "data": [1.0, 2.0], "name": k} for k in extra]
    return tensors


def _infer(rows: list[Row], **changes: Any) -> dict[str, Any]:
    return {"inputs": [_tensor(rows, **changes)]}


CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("body-array", lambda r: [_tensor(r)], ("body", "object")),
    ("inputs-missing", lambda r: {"id": "a"}, ("inputs",)),
    ("inputs-null", lambda r: {"inputs": None}, ("inputs",)),
    ("inputs-empty", lambda r: {"inputs": []}, ("inputs", "non-empty")),
    ("inputs-object", lambda r: {"inputs": _tensor(r)}, ("inputs", "array")),
    ("tensor-number", lambda r: {"inputs": [3]}, ("inputs[0]", "tensor")),
    ("tensor-null", lambda r: {"inputs": [None]}, ("inputs[0]", "null")),
    ("name-missing", lambda r: {"inputs": [{**_tensor(r), "name": None}]}, ("inputs[0].name",)),
    ("shape-missing", lambda r: _infer(r, shape=None), ("'input'", "shape")),
    ("shape-3d", lambda r: _infer(r, shape=[1, 2, N]), ("shape", "1 or 2")),
    ("shape-negative", lambda r: _infer(r, shape=[-2, N]), ("shape", "non-negative")),
    ("shape-float", lambda r: _infer(r, shape=[2.0, N]), ("shape",)),
    ("shape-boolean", lambda r: _infer(r, shape=[True, N]), ("shape",)),
    ("shape-string", lambda r: _infer(r, shape="2,30"), ("shape",)),
    ("shape-huge", lambda r: _infer(r, shape=[2**40, N]), ("needs", "values")),
    ("shape-overflow", lambda r: _infer(r, shape=[2**64, 2**64]), ("shape",)),
    ("shape-wrong-width", lambda r: _infer(r, shape=[3, 20]), ("[batch, 30]",)),
    ("shape-zero-rows", lambda r: _infer(r, shape=[0, N], data=[]), ("empty",)),
    ("datatype-int64", lambda r: _infer(r, datatype="INT64"), ("datatype", "FP32 or FP64")),
    ("datatype-bytes", lambda r: _infer(r, datatype="BYTES"), ("datatype", "'BYTES'")),
    ("datatype-lower", lambda r: _infer(r, datatype="fp32"), ("datatype",)),
    ("datatype-missing", lambda r: _infer(r, datatype=None), ("datatype",)),
    ("data-missing", lambda r: _infer(r, data=None), ("data", "null")),
    ("data-object", lambda r: _infer(r, data={"a": 1}), ("data", "object")),
    ("data-strings", lambda r: _infer(r, data=["1.0"] * 2 * N), ("data", "string")),
    ("data-booleans", lambda r: _infer(r, data=[True] * 2 * N), ("data", "boolean")),
    ("data-nulls", lambda r: _infer(r, data=[None] * 2 * N), ("data", "null")),
    ("data-one-short", lambda r: _infer(r, data=_matrix(r)[:-1]), ("needs 60 values", "59")),
    ("data-one-long", lambda r: _infer(r, data=[*_matrix(r), 1.0]), ("needs 60", "61")),
    ("data-ragged", lambda r: _infer(r, data=[[1.0] * N, 5.0]), ("data", "mixes")),
    ("data-too-big", lambda r: _infer(r, datatype="FP32", data=[3.5e38] * 60), ("float32",)),
    (
        "per-feature-unknown",
        lambda r: {"inputs": _per_feature(r, mean_radiusx=1)},
        ("unknown tensor", "mean_radiusx"),
    ),
    (
        "per-feature-missing",
        lambda r: {"inputs": _per_feature(r, skip="worst_area")},
        ("missing feature tensor", "worst_area"),
    ),
    (
        "per-feature-duplicate",
        lambda r: {"inputs": [*_per_feature(r), _per_feature(r)[0]]},
        ("appears twice",),
    ),
    (
        "per-feature-lengths",
        lambda r: {
            "inputs": [*_per_feature(r)[:-1], {**_per_feature(r)[-1], "shape": [1], "data": [1]}]
        },
        ("shape [batch]",),
    ),
    ("parameters-array", lambda r: {**_infer(r), "parameters": [1]}, ("parameters", "object")),
    ("outputs-object", lambda r: {**_infer(r), "outputs": {"name": "label"}}, ("outputs",)),
    ("outputs-unknown", lambda r: {**_infer(r), "outputs": [{"name": "x"}]}, ("unknown output",)),
    ("outputs-no-name", lambda r: {**_infer(r), "outputs": [{}]}, ("outputs[0]", "name")),
    ("id-number", lambda r: {**_infer(r), "id": 12}, ("id", "string")),
    ("id-huge", lambda r: {**_infer(r), "id": "i" * 10_000}, ("id", "128")),
]


@pytest.mark.parametrize(("build", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_v2_request_gets_a_precise_422(
    client: TestClient, rows: list[Row], build: Any, words: tuple[str, ...]
) -> None:
    # The stdlib encoder: some cases hold integers beyond 64 bits that orjson refuses to write.
    r = client.post(URL, content=json.dumps(build(rows)), headers=_JSON)
    assert r.status_code == 422, r.text
    body = r.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"], f"{word!r} not in {body['error']!r}"


_JSON = {"content-type": "application/json"}


def test_too_many_rows(client: TestClient, rows: list[Row]) -> None:
    limit = client.app.state.runtime.settings.max_rows  # type: ignore[attr-defined]
    n = limit + 1
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, N], "data": [0.5] * n * N}]
    }
    r = client.post(URL, json=body)
    assert r.status_code == 422, r.text
    assert f"{n} rows exceed the limit of {limit}" in r.json()["error"]


def _binary(rows: list[Row], header_extra: int = 0, size: int | None = None) -> tuple[bytes, int]:
    blob = np.asarray(_matrix(rows), dtype="<f4").tobytes()
    params = {"binary_data_size": len(blob) if size is None else size}
    head = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, N], "parameters": params}]}
    )
    return head + blob, len(head) + header_extra


@pytest.mark.parametrize(
    ("header", "size", "status", "word"),
    [
        ("abc", None, 400, "Inference-Header-Content-Length"),
        ("0", None, 400, "outside the body"),
        ("99999999", None, 400, "outside the body"),
        ("", 7, 422, "binary_data_size"),  # not a multiple of 4 bytes
        ("", 10_000, 422, "exceeds the binary payload"),
        ("", 4, 422, "needs 60 values, data has 1"),  # declares less than was sent
        ("", -4, 422, "binary_data_size"),
    ],
)
def test_binary_extension_errors(
    client: TestClient, rows: list[Row], header: str, size: int | None, status: int, word: str
) -> None:
    body, head_len = _binary(rows, size=size)
    r = client.post(
        URL,
        content=body,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": header or str(head_len),
        },
    )
    assert r.status_code == status, r.text
    assert word in r.json()["error"]


def test_binary_without_header_length_is_415(client: TestClient, rows: list[Row]) -> None:
    body, _ = _binary(rows)
    r = client.post(URL, content=body, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415, r.text
    assert "Inference-Header-Content-Length" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("/v2/models/nope/infer", "not"),
        (f"/v2/models/{MODEL}/versions/42/infer", "no version 42"),
        (f"/v2/models/{MODEL}/versions/latest/infer", "integers"),
        (f"/v2/models/{MODEL}/versions/\u00b2/infer", "integers"),
    ],
)
def test_unknown_model_or_version_is_404(
    client: TestClient, rows: list[Row], path: str, word: str
) -> None:
    r = client.post(path, json=_infer(rows))
    assert r.status_code == 404, r.text
    assert word in r.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        f"/v2/models/{MODEL}/versions/7",
        f"/v2/models/{MODEL}/versions/7/ready",
        f"/v2/models/{MODEL}/versions/\u00b3/ready",
        "/v1/models/nope",
    ],
)
def test_metadata_of_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, r.text
    assert r.json()["error"]


def test_nan_probabilities_are_never_served(client: TestClient, rows: list[Row]) -> None:
    r = client.post(URL, json=_infer(rows, data=[3.0e38] * 2 * N))
    assert r.status_code == 422, r.text
    assert "not finite" in r.json()["error"]


def test_binary_bytes_beyond_the_declared_tensors_are_refused(
    client: TestClient, rows: list[Row]
) -> None:
    body, head_len = _binary(rows)
    r = client.post(
        URL,
        content=body + b"\0" * 8,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(head_len),
        },
    )
    assert r.status_code == 422, r.text
    assert "248 bytes sent, the tensors declare 240" in r.json()["error"]
