"""Request bodies drawn from the demo data, shared by locust, the wrk benchmark and the soak."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from model_store.demo import DEMO_MODEL, demo_data

MODEL = DEMO_MODEL
V1_PATH = f"/v1/models/{MODEL}/predict"
V2_PATH = f"/v2/models/{MODEL}/infer"
FEEDBACK_PATH = "/v1/feedback"


@dataclass(frozen=True, slots=True)
class Demo:
    rows: list[dict[str, float]]
    labels: list[str]  # true class name of each row
    features: list[str]
    class_names: list[str]


@cache
def demo() -> Demo:
    x, y, class_names = demo_data()
    rows: list[dict[str, float]] = x.to_dict("records")
    return Demo(rows, [class_names[int(t)] for t in y], list(x.columns), class_names)


def row_indices(n: int, rng: random.Random) -> list[int]:
    total = len(demo().rows)
    return [rng.randrange(total) for _ in range(n)]


def v1_body(indices: list[int]) -> bytes:
    rows = demo().rows
    return orjson.dumps({"instances": [rows[i] for i in indices]})


def v2_body(indices: list[int]) -> bytes:
    d = demo()
    data = [d.rows[i][f] for i in indices for f in d.features]
    tensor = {"name": "input", "shape": [len(indices), len(d.features)], "datatype": "FP64"}
    return orjson.dumps({"inputs": [{**tensor, "data": data}]})


def feedback_body(request_id: str, row: int, label: str) -> bytes:
    return orjson.dumps([{"request_id": request_id, "row": row, "label": label}])


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request Vigil must refuse with ``status`` and an ``{"error": "..."}`` body."""

    name: str
    path: str
    body: bytes
    status: int
    content_type: str = "application/json"


def _with(row: dict[str, float], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key)
        else:
            out[key] = value
    return out


_DROP = object()


def _v1(*instances: dict[str, Any]) -> bytes:
    return orjson.dumps({"instances": list(instances)})


@cache
def bad_requests() -> tuple[BadRequest, ...]:
    d = demo()
    row, first = d.rows[0], d.features[0]
    return (
        BadRequest("v1 malformed json", V1_PATH, b'{"instances": [', 400),
        BadRequest("v1 missing feature", V1_PATH, _v1(_with(row, **{first: _DROP})), 422),
        BadRequest("v1 string for float", V1_PATH, _v1(_with(row, **{first: "abc"})), 422),
        BadRequest("v1 no instances", V1_PATH, orjson.dumps({"rows": [row]}), 422),
        BadRequest("v1 unknown model", "/v1/models/no-such-model/predict", _v1(row), 404),
        BadRequest("v1 unknown version", f"/v1/models/{MODEL}/versions/999/predict", _v1(row), 404),
        BadRequest(
            "v2 shape mismatch",
            V2_PATH,
            orjson.dumps(
                {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [1.0]}]}
            ),
            422,
        ),
        BadRequest(
            "v2 bad datatype",
            V2_PATH,
            orjson.dumps(
                {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "INT8", "data": [1]}]}
            ),
            422,
        ),
    )
