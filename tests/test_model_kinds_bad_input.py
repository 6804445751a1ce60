"""Bad input for the new kinds: each a 4xx naming the field, nothing logged as accepted; unseen
categories are served and counted under labels the store knows."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from model_store.demo import DIABETES, DIABETES_MIXED, WINE, train_demo_model
from model_store.manifest import MAX_CATEGORY_CHARS
from model_store.store import ModelStore
from service.app import create_app
from service.iolog.reader import read_feedback, read_predictions, read_rejected
from service.settings import Settings

ROW: dict[str, Any] = {
    "sex": "male", "age_band": "55+", "bmi": 32.1, "bp": 101.0, "s1": 157.0, "s2": 93.2,
    "s3": 38.0, "s4": 4.0, "s5": 4.8598, "s6": 87.0,
}  # fmt: skip
MIXED = f"/v1/models/{DIABETES_MIXED}/predict"
MIXED_V2 = f"/v2/models/{DIABETES_MIXED}/infer"


@pytest.fixture(scope="module")
def _kinds_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinds-bad") / "models"
    for name in (DIABETES, DIABETES_MIXED, WINE):
        train_demo_model(ModelStore(root), name)
    return root


@pytest.fixture
def kinds_settings(tmp_path: Path, _kinds_template: Path) -> Settings:
    shutil.copytree(_kinds_template, tmp_path / "models")
    return Settings(model_store=tmp_path / "models", data_dir=tmp_path / "data")


@pytest.fixture
def kinds_client(kinds_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(kinds_settings), raise_server_exceptions=False) as c:
        yield c


def _tensor(name: str, value: Any, datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": [1, 1], "datatype": datatype, "data": [value]}


def _v2(**override: tuple[Any, str]) -> dict[str, Any]:
    tensors = {k: (v, "BYTES" if isinstance(v, str) else "FP32") for k, v in ROW.items()} | override
    return {"inputs": [_tensor(k, v, dt) for k, (v, dt) in tensors.items()]}


LONG = "x" * 10 * 1024
V1_CASES: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
    ("string-for-number", {"bmi": "32.1"}, 422, ("instances[0].bmi", "expected a number")),
    ("number-for-category", {"sex": 1}, 422, ("instances[0].sex", "expected a string")),
    ("null-category", {"sex": None}, 422, ("instances[0].sex", "null")),
    ("null-number", {"bmi": None}, 422, ("instances[0].bmi", "null")),
    ("boolean-number", {"bp": True}, 422, ("instances[0].bp", "boolean")),
    ("empty-category", {"age_band": ""}, 422, ("instances[0].age_band", "empty string")),
    ("10kb-category", {"sex": LONG}, 422, ("instances[0].sex", f"limit of {MAX_CATEGORY_CHARS}")),
]


@pytest.mark.parametrize(
    ("change", "status", "words"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES]
)
def test_v1_bad_values_name_the_field_and_log_nothing_accepted(
    kinds_client: TestClient,
    kinds_settings: Settings,
    change: dict[str, Any],
    status: int,
    words: tuple[str, ...],
) -> None:
    r = kinds_client.post(MIXED, json={"instances": [ROW, {**ROW, **change}]})
    assert r.status_code == status, r.text
    for word in words:
        assert word.replace("[0]", "[1]") in r.json()["error"]
    assert len(read_predictions(kinds_settings, DIABETES_MIXED)) == 0
    assert len(read_rejected(kinds_settings)) == 1


V2_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("fp32-for-category", {"sex": (1.0, "FP32")}, ("inputs['sex'].datatype", "BYTES")),
    ("bytes-for-number", {"bmi": ("32.1", "BYTES")}, ("inputs['bmi'].datatype", "FP32")),
    ("number-in-bytes", {"sex": (3, "BYTES")}, ("inputs['sex'].data", "expected strings")),
    ("10kb-category", {"sex": (LONG, "BYTES")}, ("inputs[0].sex", "limit")),
    ("empty-category", {"sex": ("", "BYTES")}, ("inputs[0].sex", "empty string")),
    ("int-datatype", {"bmi": (32, "INT64")}, ("inputs['bmi'].datatype", "'INT64'")),
]


@pytest.mark.parametrize(
    ("change", "words"), [c[1:] for c in V2_CASES], ids=[c[0] for c in V2_CASES]
)
def test_v2_bad_tensors_name_the_field(
    kinds_client: TestClient,
    kinds_settings: Settings,
    change: dict[str, Any],
    words: tuple[str, ...],
) -> None:
    r = kinds_client.post(MIXED_V2, json=_v2(**change))
    assert r.status_code == 422, r.text
    for word in words:
        assert word in r.json()["error"]
    assert len(read_predictions(kinds_settings, DIABETES_MIXED)) == 0


def test_v2_binary_bytes_must_be_utf8(kinds_client: TestClient) -> None:
    body = _v2()
    blob = struct.pack("<I", 2) + b"\xff\xfe"
    body["inputs"][0] = {
        "name": "sex", "shape": [1, 1], "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }  # fmt: skip
    head = json.dumps(body).encode()
    r = kinds_client.post(
        MIXED_V2,
        content=head + blob,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        },
    )
    assert r.status_code == 422 and "inputs['sex']" in r.json()["error"]
    assert "UTF-8" in r.json()["error"]


FEEDBACK_CASES: list[tuple[str, str, bytes, int, str]] = [
    ("nan-for-regressor", DIABETES, b"NaN", 400, "NaN"),
    ("overflow-for-regressor", DIABETES, b"1e999", 400, "infinity"),
    ("class-for-regressor", DIABETES, b'"high"', 422, "expected a number"),
    ("number-for-classifier", WINE, b"1", 422, "expected a class name"),
    ("unknown-class", WINE, b'"class_9"', 422, "not a class of wine"),
    ("boolean", DIABETES, b"true", 422, "boolean"),
    ("null", DIABETES, b"null", 422, "null"),
]


@pytest.mark.parametrize(
    ("model", "label", "status", "words"),
    [c[1:] for c in FEEDBACK_CASES],
    ids=[c[0] for c in FEEDBACK_CASES],
)
def test_feedback_labels_must_fit_the_task(
    kinds_client: TestClient,
    kinds_settings: Settings,
    model: str,
    label: bytes,
    status: int,
    words: str,
) -> None:
    raw = b'[{"model": "%s", "request_id": "r1", "label": %s}]' % (model.encode(), label)
    r = kinds_client.post("/v1/feedback", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert "[0].label" in r.json()["error"] and words in r.json()["error"]
    assert len(read_feedback(kinds_settings, model)) == 0


def test_regressor_feedback_is_logged_as_the_float_repr(
    kinds_client: TestClient, kinds_settings: Settings
) -> None:
    fb = [{"model": DIABETES, "request_id": "r1", "label": 140}]
    assert kinds_client.post("/v1/feedback", json=fb).json() == {"accepted": 1}
    assert read_feedback(kinds_settings, DIABETES)["label"].tolist() == ["140.0"]


def test_unseen_categories_are_served_and_counted_by_feature(
    kinds_client: TestClient, kinds_settings: Settings
) -> None:
    rows = [ROW, {**ROW, "sex": "unknown-sex"}, {**ROW, "sex": "x", "age_band": "90+"}]
    r = kinds_client.post(MIXED, json={"instances": rows})
    assert r.status_code == 200, r.text
    values = [p["prediction"] for p in r.json()["predictions"]]
    # one-hot with handle_unknown="ignore": an unseen sex sets neither column
    assert values[1] != values[0] and values[2] != values[1]
    text = kinds_client.get("/metrics").text
    lines = [ln for ln in text.splitlines() if ln.startswith("vigil_unseen_categories_total{")]
    counts = {ln.split('feature="')[1].split('"')[0]: float(ln.split()[-1]) for ln in lines}
    assert counts == {"sex": 2.0, "age_band": 1.0}
    assert "unknown-sex" not in text and "90+" not in text  # values are never labels
    logged = read_predictions(kinds_settings, DIABETES_MIXED)
    assert logged["sex"].tolist() == ["male", "unknown-sex", "x"]


def test_multiclass_v1_answer_has_every_class(kinds_client: TestClient) -> None:
    row = {
        "alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2,
        "magnesium": 100.0, "total_phenols": 2.65, "flavanoids": 2.76,
        "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28, "color_intensity": 4.38,
        "hue": 1.05, "od280_od315_of_diluted_wines": 3.4, "proline": 1050.0,
    }  # fmt: skip
    r = kinds_client.post(f"/v1/models/{WINE}/predict", json={"instances": [row]})
    p = r.json()["predictions"][0]
    assert set(p["probabilities"]) == {"class_0", "class_1", "class_2"}
    assert p["label"] == "class_0" and sum(p["probabilities"].values()) == pytest.approx(1, 1e-5)


def test_openapi_describes_strings_and_regression_answers(kinds_client: TestClient) -> None:
    spec = kinds_client.get("/openapi.json").json()
    text = json.dumps(spec)
    assert '"title": "diabetes-mixed instance"' in text
    schemas = [
        s
        for s in _walk(spec)
        if isinstance(s, dict) and s.get("title") == "diabetes-mixed instance"
    ]
    sex = schemas[0]["properties"]["sex"]
    assert sex["type"] == "string" and sex["maxLength"] == MAX_CATEGORY_CHARS
    assert sex["examples"] == ["female", "male"] and sex["minLength"] == 1
    assert schemas[0]["properties"]["bmi"]["type"] == "number"
    assert '"prediction": {"type": "number"}' in text and '"BYTES"' in text


def _walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)
