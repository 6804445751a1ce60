"""Every demo model end to end on a live server: register → serve → predict V1 and V2
(tritonclient, JSON and binary tensors) → feedback → export → back-test metrics on a case whose
answer is computed here by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from model_store.demo import (
    DEMO_NAMES,
    DIABETES,
    DIABETES_MIXED,
    WINE,
    demo_frame,
    train_demo_model,
)
from model_store.store import ModelStore
from service.cli.main import app as cli
from tests.servers import VigilServer, start_vigil

ROWS = 8
OFFSETS = np.array([3.0, -3.0, 5.0, -5.0, 1.0, -1.0, 2.0, -2.0])  # label - prediction


@pytest.fixture(scope="module")
def kinds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VigilServer]:
    home = tmp_path_factory.mktemp("kinds-home")
    store = ModelStore(home / "models")
    for name in DEMO_NAMES:
        train_demo_model(store, name)
    server = start_vigil(home)
    yield server
    server.stop()


def _triton_inputs(
    server: VigilServer, name: str, x: pd.DataFrame, binary: bool
) -> list[httpclient.InferInput]:
    meta = httpx.get(f"{server.url}/v2/models/{name}").json()
    if len(meta["inputs"]) == 1:  # one [batch, n] tensor
        spec = meta["inputs"][0]
        batch = x.to_numpy(dtype=np.float32)
        inp = httpclient.InferInput(spec["name"], list(batch.shape), spec["datatype"])
        inp.set_data_from_numpy(batch, binary_data=binary)
        return [inp]
    out = []
    for spec in meta["inputs"]:  # one [batch, 1] tensor per feature, as the metadata says
        col = x[spec["name"]].to_numpy()
        arr = (
            col.astype(object).reshape(-1, 1)
            if spec["datatype"] == "BYTES"
            else col.astype(np.float32).reshape(-1, 1)
        )
        inp = httpclient.InferInput(spec["name"], [len(col), 1], spec["datatype"])
        inp.set_data_from_numpy(arr, binary_data=binary)
        out.append(inp)
    return out


def _macro_f1(truth: list[str], pred: list[str]) -> float:
    """By hand: per class 2PR/(P+R) (0 when undefined), averaged over the classes present."""
    scores = []
    for c in sorted(set(truth) | set(pred)):
        tp = sum(t == c and p == c for t, p in zip(truth, pred, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, pred, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, pred, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(scores) / len(scores)


def _cli(server: VigilServer, *args: str) -> None:
    env = {k: server.env[k] for k in ("VIGIL_MODEL_STORE", "VIGIL_DATA_DIR")}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_demo_end_to_end(kinds_server: VigilServer, name: str, tmp_path: Path) -> None:
    server = kinds_server
    x = demo_frame(name)[0].iloc[:ROWS]
    instances: list[dict[str, Any]] = x.to_dict("records")
    request_id = f"e2e-{name}"

    # V1
    r = httpx.post(
        f"{server.url}/v1/models/{name}/predict",
        json={"instances": instances, "id": request_id},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    regression = name in (DIABETES, DIABETES_MIXED)
    if regression:
        assert all(set(p) == {"prediction"} for p in predictions)
        served = np.array([p["prediction"] for p in predictions])
        assert np.isfinite(served).all() and 25 < served.mean() < 346
    else:
        classes = list(predictions[0]["probabilities"])
        assert len(classes) == (3 if name == WINE else 2)
        assert all(p["label"] == max(p["probabilities"], key=p["probabilities"].get)
                   for p in predictions)  # fmt: skip

    # V2 through tritonclient, JSON and binary tensors: the same answers as V1
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    meta = client.get_model_metadata(name)
    assert meta["parameters"]["task"] == ("regression" if regression else "classification")
    for binary in (False, True):
        out_names = ["prediction"] if regression else ["label", "probabilities"]
        result = client.infer(
            name,
            _triton_inputs(server, name, x, binary),
            outputs=[httpclient.InferRequestedOutput(o, binary_data=binary) for o in out_names],
        )
        if regression:
            values = result.as_numpy("prediction")
            assert values is not None and values.dtype == np.float64
            np.testing.assert_array_equal(values, served)
        else:
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
            assert labels == [p["label"] for p in predictions]

    # feedback: labels chosen so that the metrics are known
    if regression:
        truth_values = served + OFFSETS
        labels_sent: list[Any] = [float(v) for v in truth_values]
    else:
        served_labels = [p["label"] for p in predictions]
        other = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
        labels_sent = [other[lab] if i < 2 else lab for i, lab in enumerate(served_labels)]
    fb = [
        {"model": name, "request_id": request_id, "row": i, "label": lab}
        for i, lab in enumerate(labels_sent)
    ]
    r = httpx.post(f"{server.url}/v1/feedback", json=fb, timeout=10)
    assert r.json() == {"accepted": ROWS}

    # export: features as sent (strings stay strings), prediction and label by task
    out = tmp_path / "export.parquet"
    _cli(server, "logs", "export", "--model", name, "--out", str(out))
    back = pd.read_parquet(out)
    v1_rows = back[back["request_id"] == request_id].sort_values("row")
    assert len(v1_rows) == ROWS and len(back) == 3 * ROWS  # V1 plus two V2 requests
    for col in x.columns:
        assert v1_rows[col].tolist() == x[col].tolist()
    if regression:
        assert v1_rows["prediction"].dtype == np.float64
        assert v1_rows["prediction"].tolist() == served.tolist()
        assert [float(v) for v in v1_rows["label"]] == labels_sent
        assert not any(c.startswith("proba_") for c in back.columns)
    else:
        assert v1_rows["label"].tolist() == labels_sent

    # back-test on the served version itself: the metrics of the hand-made case
    report_path = tmp_path / "bt.json"
    _cli(server, "backtest", "--model", name, "--candidate", "1", "--out", str(report_path))
    report = json.loads(report_path.read_text())["per_version"]["1"]
    assert report["rows_replayed"] == 3 * ROWS and report["labelled_rows"] == ROWS
    served_q, cand_q = report["served_quality"], report["candidate_quality"]
    if regression:
        assert report["prediction_diff"]["max"] == 0.0
        y = truth_values
        assert served_q["mae"] == pytest.approx(22 / 8)
        assert served_q["rmse"] == pytest.approx(math.sqrt(78 / 8))
        r2 = 1 - float(np.sum(OFFSETS**2)) / float(np.sum((y - y.mean()) ** 2))
        assert served_q["r2"] == pytest.approx(r2)
    else:
        assert report["label_agreement"] == 1.0
        assert served_q["accuracy"] == pytest.approx(6 / 8)
        assert served_q["f1_macro"] == pytest.approx(_macro_f1(labels_sent, served_labels))
    assert cand_q == pytest.approx(served_q)
