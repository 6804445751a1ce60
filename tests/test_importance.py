"""Permutation importance in the passport: a known answer, normalisation, ONNX-only
registrations with and without labels, old manifests, and ``vigil models show``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from model_store.demo import DEMO_MODEL
from model_store.manifest import Manifest
from model_store.registration import register_onnx_file, register_sklearn
from model_store.store import ModelStore
from service.cli.main import app


def _signal_and_noise(rows: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    """The label depends on ``signal`` alone; ``noise`` is independent of it."""
    rng = np.random.default_rng(1)
    x = pd.DataFrame({"noise": rng.normal(size=rows), "signal": rng.normal(size=rows)})
    y = (x["signal"] + 0.3 * rng.normal(size=rows) > 0).astype(int).to_numpy()
    return x, y


def test_a_feature_the_label_ignores_has_no_importance(store: ModelStore) -> None:
    x, y = _signal_and_noise()
    mask = np.arange(len(y)) % 4 == 0
    model = LogisticRegression().fit(x.to_numpy()[~mask], y[~mask])
    m = register_sklearn(store, "toy", model, x, y, holdout_mask=mask)
    imp = m.feature_importance
    assert imp is not None
    assert imp.values["signal"] > 0.95 and imp.values["noise"] < 0.05
    assert imp.rows == int(mask.sum()) and imp.data == "held-out validation rows"


def test_demo_importance_is_normalised_and_recorded(store: ModelStore) -> None:
    imp = store.manifest(DEMO_MODEL, 1).feature_importance
    assert imp is not None
    assert (imp.method, imp.scoring, imp.n_repeats) == ("permutation", "neg_log_loss", 10)
    assert set(imp.values) == set(store.manifest(DEMO_MODEL, 1).feature_names)
    assert all(v >= 0 for v in imp.values.values())
    assert sum(imp.values.values()) == pytest.approx(1.0, abs=1e-4)
    ranked = imp.ranked()
    assert ranked[0][1] > 1 / 30  # the model leans on some features more than on others


def test_manifests_older_than_importance_still_load(store: ModelStore) -> None:
    data = json.loads(store.manifest(DEMO_MODEL, 1).model_dump_json())
    del data["feature_importance"]
    assert Manifest.model_validate(data).feature_importance is None


def _onnx_schema(store: ModelStore, tmp_path: Path) -> dict[str, object]:
    m1 = store.manifest(DEMO_MODEL, 1)
    return {
        "features": [f.model_dump() for f in m1.features],
        "outputs": {"class_names": ["malignant", "benign"]},
    }


def test_onnx_registration_measures_importance_on_a_labelled_reference(
    store: ModelStore, tmp_path: Path
) -> None:
    reference = pd.read_parquet(store.reference_path(DEMO_MODEL, 1))
    features = store.manifest(DEMO_MODEL, 1).feature_names
    labelled = reference[[*features, "target"]]
    m = register_onnx_file(
        store,
        "imported",
        store.model_path(DEMO_MODEL, 1),
        _onnx_schema(store, tmp_path),
        reference=labelled,
    )
    assert m.feature_importance is not None and m.feature_importance.rows == len(labelled)
    assert "reference" in m.feature_importance.data
    stored = pd.read_parquet(store.reference_path("imported", 1))
    assert (stored["target"] == reference["target"]).all()
    assert (stored["prediction"] == reference["prediction"]).all()  # the ONNX model was run

    unlabelled = register_onnx_file(
        store,
        "imported",
        store.model_path(DEMO_MODEL, 1),
        _onnx_schema(store, tmp_path),
        reference=reference[features],
    )
    assert unlabelled.feature_importance is None
    assert store.reference_path("imported", 2).is_file()


def test_models_show_ranks_features_or_says_there_is_none(
    store: ModelStore, tmp_path: Path
) -> None:
    env = {"VIGIL_MODEL_STORE": str(store.root)}
    shown = CliRunner().invoke(app, ["models", "show", DEMO_MODEL], env=env)
    assert shown.exit_code == 0, shown.output
    top, share = store.manifest(DEMO_MODEL, 1).feature_importance.ranked()[0]  # type: ignore[union-attr]
    assert "feature importance (permutation, neg_log_loss" in shown.output
    assert f"│ 1    │ {top}" in shown.output and f"{share:.3f}" in shown.output

    register_onnx_file(
        store, "bare", store.model_path(DEMO_MODEL, 1), _onnx_schema(store, tmp_path)
    )
    bare = CliRunner().invoke(app, ["models", "show", "bare"], env=env)
    assert bare.exit_code == 0 and "feature importance: none recorded" in bare.output
