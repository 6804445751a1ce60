"""V1 ``/predict`` refuses every malformed request with a 4xx naming the field and the problem."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import MODEL

URL = f"/v1/models/{MODEL}/predict"
Row = dict[str, float]


def _row(rows: list[Row], **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(rows[0])
    row.update(changes)
    return row


def _without(rows: list[Row], name: str) -> dict[str, Any]:
    row: dict[str, Any] = dict(rows[0])
    del row[name]
    return row


# (case id, body builder, status, words the error must contain)
CASES: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("body-array", lambda r: [], 422, ("body", "object")),
    ("body-string", lambda r: "instances", 422, ("body", "string")),
    ("body-null", lambda r: None, 422, ("body", "null")),
    ("unknown-top-field", lambda r: {"instances": [r[0]], "inputs": []}, 422, ("'inputs'",)),
    ("instances-missing", lambda r: {"id": "x"}, 422, ("instances", "missing")),
    ("instances-null", lambda r: {"instances": None}, 422, ("instances", "missing")),
    ("instances-object", lambda r: {"instances": r[0]}, 422, ("instances", "array")),
    ("instances-empty", lambda r: {"instances": []}, 422, ("instances", "empty")),
    ("row-number", lambda r: {"instances": [1.0]}, 422, ("instances[0]", "number")),
    ("row-null", lambda r: {"instances": [r[0], None]}, 422, ("instances[1]", "null")),
    ("row-array", lambda r: {"instances": [list(r[0].values())]}, 422, ("instances[0]", "array")),
    (
        "missing-feature",
        lambda r: {"instances": [_without(r, "mean_radius")]},
        422,
        ("instances[0]", "missing", "mean_radius"),
    ),
    (
        "unknown-feature",
        lambda r: {"instances": [_row(r, mean_radiu=1.0)]},
        422,
        ("instances[0]", "unknown feature", "mean_radiu"),
    ),
    (
        "unicode-feature",
        lambda r: {"instances": [_row(r, **{"méan_rädius_😀": 1.0})]},
        422,
        ("unknown feature", "méan_rädius_😀"),
    ),
    (
        "control-chars-feature",
        lambda r: {"instances": [_row(r, **{"mean\x00radius\x1b[31m\u202e": 1.0})]},
        422,
        ("unknown feature", "mean\\x00radius"),
    ),
    (
        "string-for-float",
        lambda r: {"instances": [_row(r, mean_radius="14.2")]},
        422,
        ("instances[0].mean_radius", "number", "string"),
    ),
    (
        "boolean-for-float",
        lambda r: {"instances": [r[0], _row(r, worst_area=True)]},
        422,
        ("instances[1].worst_area", "number", "boolean"),
    ),
    (
        "null-for-float",
        lambda r: {"instances": [_row(r, mean_texture=None)]},
        422,
        ("instances[0].mean_texture", "null"),
    ),
    (
        "array-for-float",
        lambda r: {"instances": [_row(r, mean_texture=[1.0])]},
        422,
        ("instances[0].mean_texture", "array"),
    ),
    (
        "object-for-float",
        lambda r: {"instances": [_row(r, mean_texture={"v": 1})]},
        422,
        ("instances[0].mean_texture", "object"),
    ),
    (
        "beyond-float32",
        lambda r: {"instances": [_row(r, mean_area=3.5e38)]},
        422,
        ("instances[0].mean_area", "float32"),
    ),
    ("id-number", lambda r: {"instances": [r[0]], "id": 7}, 422, ("id", "string")),
    ("id-empty", lambda r: {"instances": [r[0]], "id": ""}, 422, ("id", "1 to 128")),
    ("id-huge", lambda r: {"instances": [r[0]], "id": "x" * 100_000}, 422, ("id", "128")),
    ("id-control", lambda r: {"instances": [r[0]], "id": "a\nb"}, 422, ("id", "printable")),
    ("metadata-array", lambda r: {"instances": [r[0]], "metadata": []}, 422, ("metadata",)),
    (
        "metadata-number",
        lambda r: {"instances": [r[0]], "metadata": {"k": 1}},
        422,
        ("metadata.k", "string"),
    ),
    (
        "metadata-too-many",
        lambda r: {"instances": [r[0]], "metadata": {str(i): "v" for i in range(33)}},
        422,
        ("metadata", "32"),
    ),
    (
        "metadata-value-huge",
        lambda r: {"instances": [r[0]], "metadata": {"k": "v" * 5000}},
        422,
        ("metadata.k", "too long"),
    ),
]


@pytest.mark.parametrize(
    ("build", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_v1_body_gets_a_precise_4xx(
    client: TestClient,
    rows: list[Row],
    build: Any,
    status: int,
    words: tuple[str, ...],
) -> None:
    r = client.post(URL, content=orjson.dumps(build(rows)), headers=_JSON)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"], f"{word!r} not in {body['error']!r}"


_JSON = {"content-type": "application/json"}
_ROW_PREFIX = b'{"instances": [{"mean_radius": '

# Raw bodies: what a JSON encoder would never produce but a hostile client can send.
RAW: list[tuple[str, bytes, int, tuple[str, ...]]] = [
    ("empty", b"", 400, ("empty",)),
    ("whitespace", b"  \n ", 400, ("malformed JSON",)),
    ("truncated", b'{"instances": [{"mean_radius": 1', 400, ("malformed JSON",)),
    ("nan-literal", _ROW_PREFIX + b"NaN}]}", 400, ("malformed JSON",)),
    ("infinity-literal", _ROW_PREFIX + b"-Infinity}]}", 400, ("malformed JSON",)),
    ("1e309", _ROW_PREFIX + b"1e309}]}", 400, ("infinity",)),
    ("huge-integer", _ROW_PREFIX + b"9" * 400 + b"}]}", 400, ("malformed JSON",)),
    ("not-utf8", b'{"instances": "\xff\xfe"}', 400, ("malformed JSON",)),
    ("trailing-garbage", b'{"instances": []} xyz', 400, ("malformed JSON",)),
    ("single-quotes", b"{'instances': []}", 400, ("malformed JSON",)),
    ("comment", b'{"instances": [] /* hi */}', 400, ("malformed JSON",)),
    ("duplicate-top-key", b'{"instances": [], "instances": []}', 400, ("duplicate", "instances")),
    ("deep-nesting", b"[" * 5000 + b"]" * 5000, 400, ("malformed JSON",)),
    (
        "deep-nesting-in-object",
        b'{"instances": ' + b"[" * 1020 + b"]" * 1020 + b"}",
        400,
        ("deep",),
    ),
]


@pytest.mark.parametrize(("raw", "status", "words"), [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_malformed_json_gets_400(
    client: TestClient, raw: bytes, status: int, words: tuple[str, ...]
) -> None:
    r = client.post(URL, content=raw, headers=_JSON)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["error"], r.json()


def test_duplicate_feature_in_a_row_is_refused(client: TestClient, rows: list[Row]) -> None:
    row = orjson.dumps(rows[0])[:-1] + b', "mean_radius": 99.0}'
    r = client.post(URL, content=b'{"instances": [' + row + b"]}", headers=_JSON)
    assert r.status_code == 400, r.text
    assert "duplicate key 'mean_radius'" in r.json()["error"]


def test_minus_zero_is_a_number_like_zero(client: TestClient, rows: list[Row]) -> None:
    """-0 is valid JSON and numerically 0: it is served, with the same answer as 0."""
    raw_zero = orjson.dumps({"instances": [_row(rows, mean_concavity=0)]})
    raw_minus = raw_zero.replace(b'"mean_concavity":0', b'"mean_concavity":-0')
    assert raw_minus != raw_zero
    zero = client.post(URL, content=raw_zero, headers=_JSON)
    minus = client.post(URL, content=raw_minus, headers=_JSON)
    assert minus.status_code == zero.status_code == 200, minus.text
    assert minus.json()["predictions"] == zero.json()["predictions"]


def test_too_many_rows_is_refused_before_any_work(client: TestClient, rows: list[Row]) -> None:
    limit = client.app.state.runtime.settings.max_rows  # type: ignore[attr-defined]
    r = client.post(URL, json={"instances": [rows[0]] * (limit + 1)})
    assert r.status_code == 422, r.text
    assert f"{limit + 1} rows exceed the limit of {limit}" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (f"/v1/models/{MODEL}x/predict", 404, ("not",)),
        ("/v1/models/NO_SUCH/predict", 404, ("not",)),
        (f"/v1/models/{MODEL}/versions/99/predict", 404, ("no version 99",)),
        (f"/v1/models/{MODEL}/versions/v1/predict", 404, ("integers",)),
        (f"/v1/models/{MODEL}/versions/-1/predict", 404, ("integers",)),
        (f"/v1/models/{MODEL}/versions/{'9' * 40}/predict", 404, ("integers",)),
        # Unicode digits pass str.isdigit() but are not integers: still a 404, never a 500.
        (f"/v1/models/{MODEL}/versions/\u00b9/predict", 404, ("integers",)),
        (f"/v1/models/{MODEL}/versions/\u0663/predict", 404, ("integers",)),
    ],
)
def test_unknown_model_or_version_is_404(
    client: TestClient, rows: list[Row], path: str, status: int, words: tuple[str, ...]
) -> None:
    r = client.post(path, json={"instances": [rows[0]]})
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/xml", 415),
        ("application/json; charset=utf-8", 200),
        ("APPLICATION/JSON", 200),
    ],
)
def test_content_type(client: TestClient, rows: list[Row], content_type: str, status: int) -> None:
    r = client.post(
        URL,
        content=orjson.dumps({"instances": [rows[0]]}),
        headers={"content-type": content_type},
    )
    assert r.status_code == status, r.text
    if status == 415:
        assert "Content-Type" in r.json()["error"]


def test_bad_request_id_header_is_refused(client: TestClient, rows: list[Row]) -> None:
    r = client.post(URL, json={"instances": [rows[0]]}, headers={"X-Request-ID": "x" * 129})
    assert r.status_code == 422, r.text
    assert "X-Request-ID" in r.json()["error"]


def test_extreme_but_finite_values_are_refused_not_served_as_nan(
    client: TestClient, rows: list[Row]
) -> None:
    """Values within float32 overflow inside the model: NaN probabilities are never served."""
    extreme = dict.fromkeys(rows[0], 3e38)  # in float32 range; inf - inf inside the model
    r = client.post(URL, json={"instances": [rows[0], extreme]})
    assert r.status_code == 422, r.text
    assert "instances[1]" in r.json()["error"]
    assert "not finite" in r.json()["error"]
