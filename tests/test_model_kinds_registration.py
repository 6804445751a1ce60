"""Registering every model kind: regressors, multi-class, categorical string features, the tree
ensembles people run (HistGradientBoosting, LightGBM, XGBoost); demo determinism; refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cluster import KMeans
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from model_store.convert import DEFAULT_TOLERANCE, FLOAT32_TREE_TOLERANCE
from model_store.demo import (
    DEMO_NAMES,
    DIABETES,
    DIABETES_MIXED,
    WINE,
    diabetes_data,
    diabetes_mixed_data,
    holdout_mask,
    mixed_pipeline,
    train_demo_model,
    wine_data,
)
from model_store.errors import ParityError, RegistrationError
from model_store.manifest import Manifest
from model_store.registration import register_sklearn
from model_store.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
_TRAIN_ALL = (
    "import sys; from model_store.demo import DEMO_NAMES, train_demo_model; "
    "from model_store.store import ModelStore; s = ModelStore(sys.argv[1]); "
    "print(' '.join(train_demo_model(s, n).sha256 for n in DEMO_NAMES))"
)


def test_every_demo_is_deterministic_across_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shas = [
        subprocess.run(
            [sys.executable, "-c", _TRAIN_ALL, str(tmp_path / d)],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT, timeout=300,
        ).stdout.split()
        for d in ("a", "b")
    ]  # fmt: skip
    assert len(shas[0]) == len(DEMO_NAMES) and shas[0] == shas[1]


@pytest.fixture(scope="module")
def kinds_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("kinds"))
    for name in DEMO_NAMES:
        train_demo_model(store, name)
    return store


def test_regressor_manifest(kinds_store: ModelStore) -> None:
    m = kinds_store.manifest(DIABETES, 1)
    _, y = diabetes_data()
    assert (m.schema_version, m.task, m.input_mode) == (2, "regression", "tensor")
    assert m.outputs.label is None and m.outputs.probabilities is None
    assert m.outputs.prediction == "variable" and m.outputs.target == "progression"
    assert (m.outputs.min, m.outputs.max) == (float(y.min()), float(y.max()))
    assert {"mae", "rmse", "r2"} <= m.metrics.keys() and m.metrics["r2"] > 0.3
    assert m.parity is not None and m.parity.passed and m.parity.label_agreement is None
    assert m.parity.max_abs_prediction_diff is not None
    assert m.parity.absolute_tolerance == pytest.approx(1e-4 * float(np.ptp(y)))
    assert m.feature_importance is not None
    assert m.feature_importance.scoring == "neg_mean_squared_error"
    ref = pd.read_parquet(kinds_store.reference_path(DIABETES, 1))
    assert ref["prediction"].dtype == np.float64 and ref["target"].dtype == np.float64
    assert not any(c.startswith("proba_") for c in ref.columns)


def test_multiclass_manifest(kinds_store: ModelStore) -> None:
    m = kinds_store.manifest(WINE, 1)
    assert m.task == "classification" and m.outputs.class_names == ["class_0", "class_1", "class_2"]
    assert "roc_auc" not in m.metrics and m.metrics["f1_macro"] > 0.9
    ref = pd.read_parquet(kinds_store.reference_path(WINE, 1))
    assert {"proba_class_0", "proba_class_1", "proba_class_2"} <= set(ref.columns)


def test_categorical_manifest(kinds_store: ModelStore) -> None:
    m = kinds_store.manifest(DIABETES_MIXED, 1)
    x, _ = diabetes_mixed_data()
    assert m.input_mode == "columns" and m.has_categorical
    sex, band = m.features[0], m.features[1]
    assert (sex.kind, sex.dtype, sex.categories) == ("categorical", "string", ["female", "male"])
    assert band.categories == ["40-55", "55+", "<40"]
    assert band.frequencies is not None and sum(band.frequencies.values()) == pytest.approx(1.0)
    assert band.frequencies["<40"] == pytest.approx(float((x["age_band"] == "<40").mean()))
    assert sex.min is None and m.features[2].kind == "numeric" and m.features[2].min is not None
    ref = pd.read_parquet(kinds_store.reference_path(DIABETES_MIXED, 1))
    assert ref["sex"].tolist() == x["sex"].tolist() and ref["bmi"].dtype == np.float64


def test_version_one_manifests_load_and_mean_what_they_meant(kinds_store: ModelStore) -> None:
    data = json.loads(kinds_store.manifest("breast-cancer", 1).model_dump_json())
    data["schema_version"] = 1
    del data["input_mode"]
    for f in data["features"]:
        del f["kind"], f["frequencies"]
    for key in ("prediction", "target", "min", "max"):
        del data["outputs"][key]
    for key in ("max_abs_prediction_diff", "max_rel_prediction_diff", "absolute_tolerance"):
        del data["parity"][key]
    m = Manifest.model_validate(data)
    assert (m.task, m.input_mode, m.schema_version) == ("classification", "tensor", 1)
    assert all(f.kind == "numeric" and f.dtype == "float32" for f in m.features)
    assert m.outputs.label == "label" and m.outputs.probabilities == "probabilities"


def test_categorical_feature_needs_string_dtype() -> None:
    with pytest.raises(ValueError, match="dtype string"):
        Manifest.model_validate(
            {
                "name": "m", "version": 1, "created_at": "2026-01-01T00:00:00Z", "sha256": "x",
                "input_mode": "columns", "outputs": {},
                "features": [{"name": "a", "kind": "categorical", "dtype": "float32"}],
            }
        )  # fmt: skip


_TREES: list[tuple[str, Any, str]] = [
    ("hgb-clf", HistGradientBoostingClassifier(max_iter=30, random_state=0), "wine"),
    ("hgb-reg", HistGradientBoostingRegressor(max_iter=30, random_state=0), "diabetes"),
    ("lgbm-clf", LGBMClassifier(n_estimators=30, random_state=0, verbose=-1), "wine"),
    ("lgbm-reg", LGBMRegressor(n_estimators=30, random_state=0, verbose=-1), "diabetes"),
    ("xgb-clf", XGBClassifier(n_estimators=30, random_state=0), "wine"),
    ("xgb-reg", XGBRegressor(n_estimators=30, random_state=0), "diabetes"),
]


def _data(kind: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    if kind == "wine":
        x, y, _ = wine_data()
        return x, y, holdout_mask(y)
    x, y = diabetes_data()
    return x, y, holdout_mask(y, stratify=False)


@pytest.mark.parametrize(("name", "model", "data"), _TREES, ids=[t[0] for t in _TREES])
def test_tree_ensembles_register_with_parity(
    tmp_path: Path, name: str, model: Any, data: str
) -> None:
    x, y, mask = _data(data)
    model.fit(x.to_numpy()[~mask], y[~mask])
    m = register_sklearn(ModelStore(tmp_path), name, model, x, y, holdout_mask=mask)
    assert m.parity is not None and m.parity.passed
    float64_trees = name.startswith(("hgb", "lgbm"))
    assert m.parity.tolerance == (FLOAT32_TREE_TOLERANCE if float64_trees else DEFAULT_TOLERANCE)
    assert m.task == ("classification" if data == "wine" else "regression")


def test_float64_trees_fail_with_one_readable_paragraph(tmp_path: Path) -> None:
    x, y, mask = _data("wine")
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x.to_numpy(), y)
    with pytest.raises(ParityError) as err:
        register_sklearn(
            ModelStore(tmp_path), "hgb", model, x, y, holdout_mask=mask, precision="float64"
        )
    text = str(err.value)
    assert "TreeEnsembleClassifier" in text and "--precision" in text
    assert len(text) < 600 and "array(" not in text and "\n" not in text


class _Doubler(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A regressor skl2onnx has no converter for."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Doubler:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 0] * 2


def test_unsupported_step_is_named_with_what_to_try(tmp_path: Path) -> None:
    x, y = diabetes_data()
    mask = holdout_mask(y, stratify=False)
    pipe = Pipeline([("scale", StandardScaler()), ("double", _Doubler())]).fit(x.to_numpy(), y)
    with pytest.raises(RegistrationError) as err:
        register_sklearn(ModelStore(tmp_path), "d", pipe, x, y, holdout_mask=mask)
    text = str(err.value)
    assert "_Doubler (step 'double')" in text and "--onnx" in text and len(text) < 600


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x, y: KMeans(n_clusters=2, n_init=1, random_state=0).fit(x), "neither"),
        (lambda x, y: LinearRegression(), "not fitted"),
    ],
)
def test_what_is_not_a_model_is_refused(tmp_path: Path, make: Any, match: str) -> None:
    x, y = diabetes_data()
    with pytest.raises(RegistrationError, match=match):
        register_sklearn(
            ModelStore(tmp_path), "m", make(x.to_numpy(), y), x, y,
            holdout_mask=holdout_mask(y, stratify=False),
        )  # fmt: skip


def test_regressor_target_must_be_numbers(tmp_path: Path) -> None:
    x, y = diabetes_data()
    mask = holdout_mask(y, stratify=False)
    model = LinearRegression().fit(x.to_numpy(), y)
    labels = np.where(y > 150, "high", "low")
    with pytest.raises(RegistrationError, match="not numbers"):
        register_sklearn(ModelStore(tmp_path), "m", model, x, labels, holdout_mask=mask)
    with pytest.raises(RegistrationError, match="class names"):
        register_sklearn(
            ModelStore(tmp_path), "m", model, x, y, holdout_mask=mask, class_names=["a"]
        )


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (lambda n: np.arange(n) % 2 == 0, "boolean"),
        (
            lambda n: ["a", None] * (n // 2) + ["a"] * (n % 2),
            "neither all numbers nor all strings",
        ),
    ],
)
def test_unsupported_column_types_are_refused_saying_why(
    tmp_path: Path, column: Any, match: str
) -> None:
    x, y = diabetes_mixed_data()
    mask = holdout_mask(y, stratify=False)
    pipe = mixed_pipeline().fit(x, y)
    with pytest.raises(RegistrationError, match=match):
        register_sklearn(
            ModelStore(tmp_path), "m", pipe, x.assign(odd=column(len(x))), y, holdout_mask=mask
        )


def test_cli_trains_a_demo_by_name(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli.main import app

    env = {"VIGIL_MODEL_STORE": str(tmp_path / "models")}
    ok = CliRunner().invoke(app, ["models", "train-demo", WINE], env=env)
    assert ok.exit_code == 0, ok.output
    assert "registered wine v1" in ok.output and "accuracy" in ok.output
    assert ModelStore(tmp_path / "models").resolve(WINE) == 1
    bad = CliRunner().invoke(app, ["models", "train-demo", "iris"], env=env)
    assert bad.exit_code == 1 and "demos: breast-cancer, diabetes, wine" in " ".join(
        bad.output.split()
    )


def test_cli_registers_a_mixed_pipeline_from_csv(tmp_path: Path) -> None:
    import joblib
    from typer.testing import CliRunner

    from service.cli.main import app

    x, y = diabetes_mixed_data()
    joblib.dump(mixed_pipeline().fit(x, y), tmp_path / "pipe.joblib")
    x.assign(progression=y).to_csv(tmp_path / "train.csv", index=False)
    env = {"VIGIL_MODEL_STORE": str(tmp_path / "models")}
    result = CliRunner().invoke(
        app,
        ["models", "register", "mine", "--pipeline", str(tmp_path / "pipe.joblib"),
         "--data", str(tmp_path / "train.csv"), "--target", "progression"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = ModelStore(tmp_path / "models").manifest("mine", 1)
    assert (m.task, m.input_mode, m.outputs.target) == ("regression", "columns", "progression")
    assert [f.kind for f in m.features[:3]] == ["categorical", "categorical", "numeric"]


def test_onnx_only_regressor_with_categorical_features(
    kinds_store: ModelStore, tmp_path: Path
) -> None:
    from model_store.registration import register_onnx_file

    source = kinds_store.manifest(DIABETES_MIXED, 1)
    schema: dict[str, Any] = {
        "task": "regression",
        "features": [f.model_dump(exclude={"frequencies"}) for f in source.features],
        "outputs": {"target": "progression"},
    }
    x, y = diabetes_mixed_data()
    store = ModelStore(tmp_path)
    onnx = kinds_store.model_path(DIABETES_MIXED, 1)
    m = register_onnx_file(store, "imported", onnx, schema, reference=x.assign(target=y))
    assert (m.task, m.input_mode, m.parity) == ("regression", "columns", None)
    assert m.outputs.prediction == "variable" and m.feature_importance is not None
    ref = pd.read_parquet(store.reference_path("imported", 1))
    assert ref["sex"].tolist() == x["sex"].tolist() and ref["target"].tolist() == y.tolist()
    with pytest.raises(RegistrationError, match="like a regressor"):
        register_onnx_file(store, "imported", onnx, {**schema, "task": "classification"})


def test_a_rollout_needs_versions_of_one_task(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from model_store.errors import RolloutInvalidError
    from model_store.rollout import Mode, Rollouts

    store = ModelStore(tmp_path)
    train_demo_model(store, DIABETES)
    x, y, mask = _data("wine")
    clf = LogisticRegression(max_iter=5000).fit(x.to_numpy(), y)
    register_sklearn(store, DIABETES, clf, x, y, holdout_mask=mask)
    with pytest.raises(RolloutInvalidError, match="differ in task"):
        Rollouts(store).start(DIABETES, 2, Mode.SHADOW)
    assert Rollouts(store).current(DIABETES) is None
    train_demo_model(store, DIABETES, promote=False)  # v3, a regressor like v1
    state = Rollouts(store).start(DIABETES, 3, Mode.CANARY, percent=10)
    assert state.gates.metric == "mae"  # see tests/test_rollout_regression.py


def test_a_converter_attribute_dump_becomes_one_short_paragraph() -> None:
    """The message skl2onnx gave for HistGradientBoosting under protobuf 7 (kilobytes of the
    trees' arrays after the node name) is cut to its first sentence and its cause."""
    from model_store.convert import conversion_error

    x, y, _ = wine_data()
    model = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(x.to_numpy(), y)
    arrays = ", ".join(f"{i}.5e-01" for i in range(5000))
    try:
        try:
            raise TypeError("Field onnx.AttributeProto.ints: Expected an int, got a boolean.")
        except TypeError as cause:
            raise ValueError(
                "Unable to create node 'TreeEnsembleClassifier' with name='TreeEnsembleClassifier'"
                f" and attributes={{'base_values': array([{arrays}], dtype=float32)}}."
            ) from cause
    except ValueError as exc:
        text = str(conversion_error(model, exc))
    assert text.startswith(
        "cannot convert HistGradientBoostingClassifier (step 'HistGradientBoostingClassifier') "
        "to ONNX: Unable to create node 'TreeEnsembleClassifier' (Field onnx.AttributeProto.ints: "
        "Expected an int, got a boolean). To fix: try the other --precision"
    )
    assert len(text) < 500 and "array(" not in text and "base_values" not in text
