"""Rolling out a regressor: its comparison and gates in a regressor's terms.

What users rely on: a regressor's rollout compares MAE and RMSE (with bootstrap intervals that
cover the truth and say whether a gap is real), shadow agreement within a tolerance and the mean
|Δ prediction|; its metric gate is non-inferiority of an error (lower is better); a classifier's
metric is refused for it and a regressor's for a classifier.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from model_store.demo import DIABETES, demo_frame, train_demo_model
from model_store.errors import RolloutInvalidError
from model_store.rollout import Gates, Mode, Rollouts
from model_store.store import ModelStore
from service.app import create_app
from service.offline import compare_regression
from service.offline.compare import compare
from service.offline.gates import Verdict, evaluate_gates
from service.settings import Settings
from tests.conftest import MODEL, wait_route

TOKEN = "regression-rollout-token-5c2a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRIALS = 200
SIGMA_TO_MAE = np.sqrt(2 / np.pi)  # E|N(0, s)| = s * sqrt(2 / pi)


def _answers(rng: np.random.Generator, ids: np.ndarray, y: np.ndarray, sigma: float,
             version: int, role: str) -> pd.DataFrame:  # fmt: skip
    """Logged rows of a regressor whose errors are N(0, sigma): its MAE is sigma * sqrt(2/pi)."""
    pred = y + rng.normal(0, sigma, len(ids))
    return pd.DataFrame(
        {
            "request_id": ids, "row": 0, "version": version, "role": role, "status": 200,
            "latency_s": 0.002, "prediction": [repr(float(v)) for v in pred],
            "label": [repr(float(v)) for v in y],
        }
    )  # fmt: skip


def shadow_traffic(n: int, sigma_p: float, sigma_c: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids, y = np.array([f"r{i}" for i in range(n)]), rng.uniform(25, 350, n)
    return pd.concat([_answers(rng, ids, y, sigma_p, 1, "primary"),
                      _answers(rng, ids, y, sigma_c, 2, "shadow")])  # fmt: skip


def canary_traffic(n: int, sigma_p: float, sigma_c: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids, y = np.array([f"r{i}" for i in range(n)]), rng.uniform(25, 350, n)
    canary = rng.random(n) < 0.1
    return pd.concat([_answers(rng, ids[~canary], y[~canary], sigma_p, 1, "primary"),
                      _answers(rng, ids[canary], y[canary], sigma_c, 2, "canary")])  # fmt: skip


@pytest.mark.parametrize(
    ("traffic", "n"), [(shadow_traffic, 400), (canary_traffic, 2000)], ids=["paired", "unpaired"]
)
def test_the_mae_difference_interval_covers_the_true_gap(traffic: Any, n: int) -> None:
    """True MAE gap: (50 - 45) * sqrt(2/pi) ≈ 3.99. Over 200 seeded simulations the 95 %
    interval must cover it at least 90 % of the time (measured: see the README)."""
    truth = (50 - 45) * SIGMA_TO_MAE
    covered = 0
    for seed in range(TRIALS):
        frame = traffic(n, 45.0, 50.0, seed)
        d = compare(frame, 1, 2, task="regression", resamples=500, seed=seed).difference["mae"]
        covered += d.low <= truth <= d.high
    assert covered / TRIALS >= 0.90


def test_a_large_gap_excludes_zero_and_none_includes_it() -> None:
    gap = compare(shadow_traffic(1000, 30.0, 60.0, seed=1), 1, 2, task="regression")
    assert gap.difference_kind == "paired"
    assert gap.difference["mae"].low > 0 and gap.difference["rmse"].low > 0
    same = compare(shadow_traffic(1000, 40.0, 40.0, seed=2), 1, 2, task="regression")
    assert same.difference["mae"].low < 0 < same.difference["mae"].high
    canary = compare(canary_traffic(20000, 30.0, 60.0, seed=3), 1, 2, task="regression")
    assert canary.difference_kind == "unpaired" and canary.difference["mae"].low > 0


def test_side_metrics_and_shadow_numbers_match_their_definitions() -> None:
    frame = shadow_traffic(500, 40.0, 45.0, seed=4)
    c = compare(frame, 1, 2, task="regression", tolerance=0.1)
    assert c.task == "regression"
    for side, version in ((c.primary, 1), (c.candidate, 2)):
        rows = frame[frame["version"] == version]
        err = rows["prediction"].astype(float) - rows["label"].astype(float)
        assert side.labelled_rows == 500
        assert side.metrics["mae"].value == pytest.approx(err.abs().mean())
        assert side.metrics["rmse"].value == pytest.approx(np.sqrt((err**2).mean()))
        assert side.metrics["mae"].low < side.metrics["mae"].value < side.metrics["mae"].high
    p = frame.loc[frame["version"] == 1, "prediction"].astype(float).to_numpy()
    q = frame.loc[frame["version"] == 2, "prediction"].astype(float).to_numpy()
    assert c.shadow.rows == 500 and c.shadow.mean_abs_proba_diff is None
    assert c.shadow.mean_abs_prediction_diff == pytest.approx(np.abs(q - p).mean())
    within = np.abs(q - p) <= 0.1 * np.maximum(np.abs(p), np.abs(q))
    assert c.shadow.agreement == pytest.approx(within.mean())
    assert c.difference["mae"].value == pytest.approx(
        c.candidate.metrics["mae"].value - c.primary.metrics["mae"].value
    )


def test_many_labelled_rows_give_the_value_of_all_of_them() -> None:
    """Above MAX_ROWS the interval comes from a sample, centred on the value of all rows."""
    n = compare_regression.MAX_ROWS + 10_000
    frame = shadow_traffic(n, 40.0, 40.0, seed=5)
    c = compare(frame, 1, 2, task="regression", resamples=200)
    rows = frame[frame["version"] == 1]
    mae = (rows["prediction"].astype(float) - rows["label"].astype(float)).abs().mean()
    est = c.primary.metrics["mae"]
    assert est.n == n and est.value == pytest.approx(mae)
    assert est.low < est.value < est.high
    assert est.high - est.low < 2.0  # ~±0.8 for 20,000 rows of sd ~24: a real interval


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _verdict(frame: pd.DataFrame, margin: float) -> Verdict:
    gates = Gates(metric="mae", metric_margin=margin, min_requests=10, min_labels=50,
                  min_duration_s=0)  # fmt: skip
    c = compare(frame, 1, 2, task="regression")
    results = {r.name: r for r in evaluate_gates(c, gates, T0, T0 + timedelta(hours=1))}
    return results["mae_non_inferiority"].verdict


def test_the_metric_gate_judges_an_error_against_the_primarys() -> None:
    """Pass: the whole interval of candidate - primary is below margin x primary MAE; fail: the
    whole interval is above it; wait while it straddles."""
    assert _verdict(shadow_traffic(2000, 40.0, 30.0, seed=6), 0.02) is Verdict.PASS  # better
    assert _verdict(shadow_traffic(2000, 30.0, 60.0, seed=7), 0.02) is Verdict.FAIL  # worse
    # 1 % worse, margin 2 %: too few rows to tell
    assert _verdict(shadow_traffic(100, 40.0, 40.4, seed=8), 0.02) is Verdict.NOT_ENOUGH_DATA


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("regression-rollout") / "models")
    train_demo_model(store, DIABETES)  # v1, production
    train_demo_model(store, DIABETES, c=0.01, promote=False)  # v2: ridge alpha x 100, weaker
    return store.root


@pytest.fixture
def reg_settings(tmp_path: Path, _template: Path) -> Settings:
    home = tmp_path / "regression"
    shutil.copytree(_template, home / "models")
    return Settings(
        model_store=home / "models", data_dir=home / "data",
        admin_token=SecretStr(TOKEN), alias_poll_s=0.05,
    )  # fmt: skip


@pytest.fixture
def reg_client(reg_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(reg_settings), raise_server_exceptions=False) as c:
        yield c


def test_a_regressor_rollout_judges_mae_and_refuses_a_classifiers_metric(
    reg_settings: Settings, store: ModelStore
) -> None:
    rollouts = Rollouts(ModelStore(reg_settings.model_store))
    with pytest.raises(RolloutInvalidError, match=r"gates.metric: accuracy .* mae or rmse"):
        rollouts.start(DIABETES, 2, Mode.SHADOW, gates={"metric": "accuracy"})
    assert rollouts.current(DIABETES) is None
    assert rollouts.start(DIABETES, 2, Mode.SHADOW).gates.metric == "mae"
    with pytest.raises(RolloutInvalidError, match=r"gates.metric: rmse .* accuracy or f1_macro"):
        Rollouts(store).start(MODEL, 2, Mode.CANARY, gates={"metric": "rmse"})


def _predict(client: TestClient, row: dict[str, Any], url: str, rid: str | None = None) -> float:
    headers = {"X-Request-ID": rid} if rid else {}
    r = client.post(url, json={"instances": [row]}, headers=headers)
    assert r.status_code == 200, r.text
    return float(r.json()["predictions"][0]["prediction"])


def test_shadow_rollout_of_a_regressor_over_http(reg_client: TestClient) -> None:
    """Served, shadowed, labelled and compared end to end: the numbers are those of the
    answers each version gave (the candidate's asked for before the rollout, by version URL)."""
    x, y = demo_frame(DIABETES)
    rows = [x.iloc[i].to_dict() for i in range(120)]
    v2_url = f"/v1/models/{DIABETES}/versions/2/predict"
    candidate = np.array([_predict(reg_client, row, v2_url) for row in rows])
    body = {"version": 2, "mode": "shadow",
            "gates": {"min_requests": 100, "min_labels": 100, "min_duration_s": 0}}  # fmt: skip
    r = reg_client.post(f"/v1/admin/models/{DIABETES}/rollout", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["gates"]["metric"] == "mae"
    wait_route(reg_client.app, r.json()["revision"], DIABETES)  # type: ignore[arg-type]
    url = f"/v1/models/{DIABETES}/predict"
    primary = np.array([_predict(reg_client, row, url, f"q{i}") for i, row in enumerate(rows)])
    labels = [{"request_id": f"q{i}", "row": 0, "label": float(y[i])} for i in range(120)]
    assert reg_client.post("/v1/feedback", json=labels).status_code == 200

    report = reg_client.get(f"/v1/models/{DIABETES}/rollout").json()
    c = report["comparison"]
    assert c["task"] == "regression" and c["difference_kind"] == "paired"
    assert c["shadow"]["rows"] == 120
    assert c["shadow"]["mean_abs_prediction_diff"] == pytest.approx(
        np.abs(candidate - primary).mean(), rel=1e-6
    )
    truth = y[:120].astype(float)
    mae_p, mae_c = np.abs(primary - truth).mean(), np.abs(candidate - truth).mean()
    assert c["primary"]["metrics"]["mae"]["value"] == pytest.approx(mae_p, rel=1e-6)
    assert c["candidate"]["metrics"]["mae"]["value"] == pytest.approx(mae_c, rel=1e-6)
    diff = c["difference"]["mae"]
    assert diff["value"] == pytest.approx(mae_c - mae_p, rel=1e-6)
    assert diff["low"] <= diff["value"] <= diff["high"]
    gates = {g["name"]: g for g in report["gate_results"]}
    metric = gates["mae_non_inferiority"]
    assert metric["threshold"] == pytest.approx(0.02 * mae_p, rel=1e-6)
    # v2's ridge is 100x more regularised: its MAE is about twice v1's (~60 vs ~30), so the
    # whole interval lies above the 2 % allowed and the shadow rows seldom agree within 10 %
    assert mae_c > 1.5 * mae_p and metric["verdict"] == "fail"
    assert metric["observed"] == pytest.approx(diff["high"])
    assert report["decision"] == "hold"  # a quality gate failed: a person decides
    agreement = gates["min_agreement"]
    within = np.abs(candidate - primary) <= 0.1 * np.maximum(np.abs(candidate), np.abs(primary))
    assert agreement["observed"] == pytest.approx(within.mean())
    assert agreement["verdict"] == ("pass" if within.mean() >= 0.9 else "fail")
    assert f"within 10% on {within.mean():.1%} of 120 shadow rows" == agreement["detail"]
