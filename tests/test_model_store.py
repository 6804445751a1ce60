"""The model store: determinism, parity refusal, integrity refusal, aliases, registration."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from model_store.convert import check_parity, to_onnx
from model_store.demo import DEMO_MODEL, demo_data, demo_pipeline, holdout_mask, train_demo
from model_store.errors import IntegrityError, ParityError, RegistrationError
from model_store.registration import register_onnx_file, register_sklearn
from model_store.store import ModelStore


def test_train_demo_is_deterministic(tmp_path: Path) -> None:
    a = train_demo(ModelStore(tmp_path / "a"))
    b = train_demo(ModelStore(tmp_path / "b"))
    assert a.sha256 == b.sha256
    assert a.training_data == b.training_data
    assert a.feature_importance is not None
    assert a.feature_importance == b.feature_importance  # same shares in two registrations
    assert a.parity is not None and a.parity.passed and a.parity.rows > 100


def test_demo_manifest_is_a_complete_passport(store: ModelStore) -> None:
    m = store.manifest(DEMO_MODEL, 1)
    assert m.feature_names[:2] == ["mean_radius", "mean_texture"] and len(m.features) == 30
    assert all(f.min is not None and f.max is not None and f.min <= f.max for f in m.features)
    assert m.outputs.class_names == ["malignant", "benign"]
    assert m.metrics["accuracy"] > 0.9
    assert {"scikit-learn", "skl2onnx", "onnxruntime"} <= m.library_versions.keys()
    assert m.hyperparameters["clf__C"] == 1.0
    ref = pd.read_parquet(store.reference_path(DEMO_MODEL, 1))
    assert {"prediction", "proba_benign", "target", "split"} <= set(ref.columns)
    assert len(ref) == m.training_data.rows if m.training_data else False


def test_versions_are_never_overwritten(store: ModelStore) -> None:
    before = store.manifest(DEMO_MODEL, 1).sha256
    m = train_demo(store, promote=False)
    assert m.version == 3
    assert store.manifest(DEMO_MODEL, 1).sha256 == before


def test_parity_failure_is_refused_with_the_fix(tmp_path: Path) -> None:
    # skl2onnx's float64 random forest disagrees with scikit-learn by 0.02 on this data.
    x, y, names = demo_data()
    mask = holdout_mask(y)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(
        x.to_numpy()[~mask], y[~mask]
    )
    store = ModelStore(tmp_path)
    with pytest.raises(ParityError, match=r"max probability difference 0\.02.*--precision"):
        register_sklearn(
            store, "forest", forest, x, y, holdout_mask=mask, class_names=names,
            precision="float64",
        )  # fmt: skip
    assert store.versions("forest") == []


def test_parity_compares_the_real_conversion(tmp_path: Path) -> None:
    x, y, _ = demo_data()
    mask = holdout_mask(y)
    a = demo_pipeline(c=1.0).fit(x.to_numpy()[~mask], y[~mask])
    b = demo_pipeline(c=0.001).fit(x.to_numpy()[~mask], y[~mask])
    with pytest.raises(ParityError, match="disagree"):
        check_parity(a, to_onnx(b, 30, name="b"), x.to_numpy()[mask])


def test_tree_ensemble_in_float32_records_its_real_difference(tmp_path: Path) -> None:
    x, y, names = demo_data()
    mask = holdout_mask(y)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(
        x.to_numpy()[~mask], y[~mask]
    )
    store = ModelStore(tmp_path)
    m = register_sklearn(store, "forest", forest, x, y, holdout_mask=mask, class_names=names)
    assert m.parity is not None and m.parity.passed
    diff = m.parity.max_abs_probability_diff
    assert diff is not None and 0 < diff <= m.parity.tolerance


def test_tampered_model_file_is_refused(store: ModelStore) -> None:
    path = store.model_path(DEMO_MODEL, 1)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="does not match"):
        store.verified_model_bytes(DEMO_MODEL, 1)


def test_alias_promote_and_rollback(store: ModelStore) -> None:
    assert store.resolve(DEMO_MODEL) == 1
    assert store.set_alias(DEMO_MODEL, 2) == 1
    assert store.resolve(DEMO_MODEL) == 2
    assert store.rollback(DEMO_MODEL) == 1
    assert store.resolve(DEMO_MODEL) == 1
    with pytest.raises(RegistrationError, match="no earlier version"):
        store.rollback(DEMO_MODEL)


def test_register_onnx_file_with_schema(store: ModelStore, tmp_path: Path) -> None:
    m1 = store.manifest(DEMO_MODEL, 1)
    schema = {
        "features": [f.model_dump() for f in m1.features],
        "outputs": {"class_names": ["malignant", "benign"]},
    }
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(json.dumps(schema))
    m = register_onnx_file(
        store, "imported", store.model_path(DEMO_MODEL, 1), json.loads(schema_path.read_text())
    )
    assert m.sha256 == m1.sha256 and m.parity is None and m.version == 1
    with pytest.raises(RegistrationError, match="classes"):
        register_onnx_file(
            store,
            "imported",
            store.model_path(DEMO_MODEL, 1),
            {**schema, "outputs": {"class_names": ["a", "b", "c"]}},
        )


def test_register_cli_with_joblib_pipeline(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli.main import app

    x, y, _ = demo_data()
    pipe = demo_pipeline(c=0.5).fit(x.to_numpy(), y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    data = x.assign(target=y)
    data.to_parquet(tmp_path / "train.parquet")
    env = {"VIGIL_MODEL_STORE": str(tmp_path / "models")}
    result = CliRunner().invoke(
        app,
        ["models", "register", "mine", "--pipeline", str(tmp_path / "pipe.joblib"),
         "--data", str(tmp_path / "train.parquet"), "--promote"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ModelStore(tmp_path / "models").resolve("mine") == 1
    bad = CliRunner().invoke(app, ["models", "show", "nope"], env=env)
    assert bad.exit_code == 1 and "not in the store" in bad.output
