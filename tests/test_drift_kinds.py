"""Drift of the other kinds of model, on references built here with scikit-learn: a regressor over
numeric and categorical (string) features, and a three-class classifier. Categorical features get
the categorical test, a shifted category mix is flagged and a clean window is not, unseen
categories are reported per feature, and the performance metrics follow the task."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model_store.manifest import FeatureSpec, Manifest, OutputSpec
from monitoring.drift.cbpe import band_multiclass, expected_metrics, expected_multiclass
from monitoring.drift.columns import Watched
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse, regression_quality
from monitoring.drift.html import drift_snapshot, quality_snapshot, write_html
from monitoring.drift.index import trend_fields
from monitoring.drift.push import drift_registry
from monitoring.drift.reference import ReferenceStats
from monitoring.drift.result import DriftReport, Status
from monitoring.drift.segments import analyse_segments

CFG = DriftConfig()
CATEGORICAL = ["sex", "age_band"]
NUMERIC = ["bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _split(n: int) -> np.ndarray:
    split = np.full(n, "train", dtype=object)
    split[np.random.default_rng(0).permutation(n)[: n // 4]] = "validation"
    return split


def _manifest(
    name: str,
    features: list[FeatureSpec],
    outputs: OutputSpec,
    task: str,
) -> Manifest:
    return Manifest.model_validate(
        {
            "schema_version": 2,
            "name": name,
            "version": 1,
            "created_at": datetime(2026, 1, 1, tzinfo=UTC),
            "sha256": "0" * 64,
            "task": task,
            "input_mode": "columns" if any(f.kind == "categorical" for f in features) else "tensor",
            "features": features,
            "outputs": outputs,
        }
    )


def _categorical_spec(name: str, values: pd.Series) -> FeatureSpec:
    shares = values.value_counts(normalize=True)
    return FeatureSpec(
        name=name,
        kind="categorical",
        dtype="string",
        categories=sorted(str(c) for c in shares.index),
        frequencies={str(c): float(v) for c, v in shares.items()},
    )


def _regressor(x: pd.DataFrame, y: np.ndarray) -> Pipeline:
    encode = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)], remainder="passthrough"
    )
    return Pipeline([("encode", encode), ("fit", LinearRegression())]).fit(x, y)


@pytest.fixture(scope="module")
def mixed() -> tuple[pd.DataFrame, Manifest]:
    return mixed_case()


@pytest.fixture(scope="module")
def wine() -> tuple[pd.DataFrame, Manifest]:
    return wine_case()


def mixed_case() -> tuple[pd.DataFrame, Manifest]:
    """A regressor on the diabetes data with ``sex`` and ``age_band`` as strings."""
    raw = load_diabetes(as_frame=True, scaled=False)
    x = raw.data.rename(columns=str.lower)
    x["sex"] = np.where(x["sex"] == 1, "female", "male")
    x["age_band"] = pd.cut(x["age"], [0, 40, 55, 200], labels=["<40", "40-55", "55+"]).astype(str)
    x = x[[*CATEGORICAL, *NUMERIC]]
    y = raw.target.to_numpy(np.float64)
    model = _regressor(x, y)
    reference = x.copy()
    reference["prediction"] = model.predict(x)
    reference["target"] = y
    reference["split"] = _split(len(x))
    features = [_categorical_spec(c, x[c]) for c in CATEGORICAL] + [
        FeatureSpec(name=c, dtype="float64", min=float(x[c].min()), max=float(x[c].max()))
        for c in NUMERIC
    ]
    outputs = OutputSpec(
        label=None,
        probabilities=None,
        prediction="variable",
        target="progression",
        min=float(y.min()),
        max=float(y.max()),
    )
    return reference, _manifest("diabetes-mixed", features, outputs, "regression")


def wine_case() -> tuple[pd.DataFrame, Manifest]:
    """A three-class classifier on the wine data, made unsure enough (C=0.05) to estimate."""
    raw = load_wine(as_frame=True)
    x = raw.data.rename(columns=lambda c: c.lower().replace("/", "_"))
    names = [str(n) for n in raw.target_names]
    model = Pipeline(
        [("scale", StandardScaler()), ("fit", LogisticRegression(max_iter=2000, C=0.05))]
    ).fit(x, raw.target)
    reference = x.copy()
    reference["prediction"] = np.asarray(names, dtype=object)[model.predict(x)]
    for i, n in enumerate(names):
        reference[f"proba_{n}"] = model.predict_proba(x)[:, i]
    reference["target"] = np.asarray(names, dtype=object)[raw.target]
    reference["split"] = _split(len(x))
    features = [
        FeatureSpec(name=c, dtype="float32", min=float(x[c].min()), max=float(x[c].max()))
        for c in x.columns
    ]
    outputs = OutputSpec(class_names=names, class_values=[0, 1, 2])
    return reference, _manifest("wine", features, outputs, "classification")


def window(reference: pd.DataFrame, rows: int, seed: int, *, regression: bool) -> pd.DataFrame:
    """Rows drawn from the reference, shaped as the I/O log reads: feedback labels are text (a
    regressor's as the float's repr)."""
    w = reference.sample(rows, replace=True, random_state=seed).reset_index(drop=True)
    w = w.rename(columns={"target": "label"}).drop(columns=["split"])
    if regression:
        w["label"] = w["label"].map(repr)
    w["version"] = 1
    return w


def _mix(w: pd.DataFrame, column: str, value: str, share: float, seed: int) -> pd.DataFrame:
    """``share`` of the rows set to ``value``: the category mix moves towards it."""
    rng = np.random.default_rng(seed)
    out = w.copy()
    out.loc[rng.random(len(out)) < share, column] = value
    return out


# -- the regressor with categorical features ----------------------------------------------------


def test_categorical_features_get_the_categorical_test_and_the_mapping_says_so(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    watched = Watched.of(manifest)
    assert watched.categorical == CATEGORICAL and watched.numeric == NUMERIC
    assert (watched.prediction, watched.prediction_kind) == ("prediction", "numeric")
    result = analyse(window(reference, 400, 1, regression=True), reference, manifest, CFG)
    assert {result.features[c].method for c in CATEGORICAL} == {"jensenshannon"}
    assert {result.features[c].method for c in NUMERIC} == {"wasserstein"}
    assert result.prediction is not None and result.prediction.method == "wasserstein"
    assert result.evidence is not None and result.evidence.categorical == CATEGORICAL
    definition = drift_snapshot(result.evidence).context.data_definition
    assert set(definition.categorical_columns) == set(CATEGORICAL)
    assert "prediction" in definition.numerical_columns


def test_clean_windows_of_the_regressor_are_not_flagged(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    results = [
        analyse(window(reference, rows, seed, regression=True), reference, manifest, CFG)
        for seed in range(20)
        for rows in (100, 400)
    ]
    feature_flags = sum(len(r.drifted_features) for r in results)
    print(f"40 clean windows: {feature_flags} feature flags")
    assert sum(r.flags.data_drift for r in results) <= 1
    assert feature_flags <= 4  # ≤ 1 % of 400 feature tests
    assert sum(r.flags.prediction_drift for r in results) <= 1
    assert sum(r.flags.model_drift for r in results) <= 1
    assert all(not r.unseen[c].rows for r in results for c in CATEGORICAL)


def test_a_shifted_category_mix_is_flagged_for_that_feature(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    share = (reference["age_band"] == "<40").mean()
    w = _mix(window(reference, 400, 2, regression=True), "age_band", "<40", 0.5, seed=2)
    result = analyse(w, reference, manifest, CFG)
    assert (w["age_band"] == "<40").mean() > share + 0.3
    assert result.features["age_band"].drifted
    assert result.drifted_features == ["age_band"]  # and nothing else
    assert result.unseen["age_band"].rows == 0  # a new mix of known categories
    # the plain share rule (no importance in this manifest): 1 of 10 features is below 0.5
    assert result.verdict is not None and result.verdict.rule == "share"
    assert not result.flags.data_drift
    every = DriftConfig(drift_share=0.1)
    assert analyse(w, reference, manifest, every).flags.data_drift


def test_a_numeric_shift_is_flagged_and_moves_the_predicted_value(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    w = window(reference, 400, 3, regression=True)
    for column in ("bmi", "s5"):  # the two features the progression depends on most
        w[column] += 1.5 * reference[column].std()
    features = [*CATEGORICAL, *NUMERIC]
    w["prediction"] = _regressor(reference[features], reference["target"]).predict(w[features])
    result = analyse(w, reference, manifest, CFG)
    assert set(result.drifted_features) == {"bmi", "s5"}
    assert result.flags.prediction_drift and result.status is Status.DRIFT
    d = result.distribution
    assert d is not None and d.kind == "quantiles"
    assert d.current["0.5"] > d.reference["0.5"] + 30  # the median prediction rose


def test_unseen_categories_are_reported_per_feature_with_their_share(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    w = _mix(window(reference, 500, 4, regression=True), "sex", "other", 0.2, seed=4)
    result = analyse(w, reference, manifest, CFG)
    unseen = result.unseen["sex"]
    assert unseen.share == pytest.approx((w["sex"] == "other").mean())
    assert 0.15 < unseen.share < 0.25 and unseen.values == {"other": unseen.rows}
    assert result.unseen["age_band"].share == 0.0
    assert result.features["sex"].drifted  # a fifth of the rows in a category never seen
    doc = result.to_dict()
    assert doc["unseen_categories"]["sex"]["share"] == pytest.approx(unseen.share)
    assert f"unseen categories: sex {unseen.share:.1%}" in result.message


def test_regression_metrics_on_a_case_computed_by_hand() -> None:
    y = pd.Series([1.0, 2.0, 3.0, 4.0])
    p = pd.Series([1.0, 2.0, 3.0, 5.0])
    # errors 0, 0, 0, 1: MAE 1/4, RMSE sqrt(1/4); R² = 1 - 1 / sum((y - 2.5)²) = 1 - 1/5
    assert regression_quality(y, p) == pytest.approx({"mae": 0.25, "rmse": 0.5, "r2": 0.8})


def test_additive_label_noise_is_model_drift_and_honest_labels_are_not(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    honest = window(reference, 400, 5, regression=True)
    truth = honest["label"].map(float)
    noise = np.random.default_rng(5).normal(0, truth.std(), len(honest))
    noisy = honest.assign(label=(truth + noise).map(repr))
    ok, bad = (analyse(w, reference, manifest, CFG) for w in (honest, noisy))
    assert ok.performance is not None and bad.performance is not None
    assert ok.performance.task == "regression" and ok.performance.dropped is False
    assert bad.performance.dropped is True and bad.flags.model_drift
    assert bad.performance.current is not None and bad.performance.reference is not None
    assert set(bad.performance.current) == {"mae", "rmse", "r2"}
    assert bad.performance.current["rmse"] > 1.5 * bad.performance.reference["rmse"]
    assert bad.performance.current["r2"] < ok.performance.current["r2"]  # type: ignore[index]
    assert "model drift: MAE" in bad.message
    est = bad.estimate
    assert est is not None and est.estimated is None and "regressor" in est.note


def test_regression_numbers_equal_evidentlys_regression_metrics(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    result = analyse(window(reference, 300, 6, regression=True), reference, manifest, CFG)
    assert result.evidence is not None and result.performance is not None
    snapshot = quality_snapshot(result.evidence)
    assert snapshot is not None
    values = {
        m["config"]["type"].rsplit(":", 1)[-1]: m["value"] for m in snapshot.dict()["metrics"]
    }
    current = result.performance.current
    assert current is not None
    assert values["MAE"]["mean"] == pytest.approx(current["mae"], rel=1e-9)
    assert values["RMSE"] == pytest.approx(current["rmse"], rel=1e-9)
    assert values["R2Score"] == pytest.approx(current["r2"], rel=1e-9)


def test_categorical_json_numbers_equal_evidentlys_report(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    w = _mix(window(reference, 400, 7, regression=True), "sex", "female", 0.3, seed=7)
    result = analyse(w, reference, manifest, CFG)
    assert result.evidence is not None and result.prediction is not None
    snapshot = drift_snapshot(result.evidence)
    values = {
        m["config"]["column"]: m["value"]
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    ours = {**result.features, "prediction": result.prediction}
    assert set(values) == set(ours)
    for column, drift in ours.items():
        assert values[column] == pytest.approx(drift.score, rel=1e-9), column


def test_segments_by_a_string_feature(mixed: tuple[pd.DataFrame, Manifest]) -> None:
    reference, manifest = mixed
    w = window(reference, 600, 8, regression=True)
    male = w["sex"] == "male"
    w.loc[male, "bmi"] += 2 * reference["bmi"].std()  # only the men's traffic moved
    segments = analyse_segments(w, reference, manifest, DriftConfig(drift_share=0.1), "sex")
    by_value = {s.value: s for s in segments.segments}
    assert set(by_value) == {"female", "male"}
    assert by_value["male"].status is Status.DRIFT and "bmi" in by_value["male"].drifted_features
    assert "bmi" not in by_value["female"].drifted_features
    # each segment holds one sex: the key itself is not compared, or it would drift in every one
    assert all("sex" not in s.drifted_features for s in segments.segments)
    assert by_value["male"].realized is not None and "mae" in by_value["male"].realized


def test_reference_statistics_of_a_regressor_survive_the_cache(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    stats = ReferenceStats.compute(reference, "a" * 64, Watched.of(manifest), seed=0)
    again = ReferenceStats.from_json(stats.to_json())
    assert again == stats or (again.quality, again.finite) == (stats.quality, stats.finite)
    assert stats.quality is not None and set(stats.quality) == {"mae", "rmse", "r2"}
    assert isinstance(stats.calibration, str) and "regressor" in stats.calibration
    w = window(reference, 300, 9, regression=True)
    cached = analyse(w, reference, manifest, CFG, again).to_dict()
    assert cached == analyse(w, reference, manifest, CFG).to_dict()


def test_gauges_and_page_of_a_regressor(
    mixed: tuple[pd.DataFrame, Manifest], tmp_path: Path
) -> None:
    reference, manifest = mixed
    w = _mix(window(reference, 300, 10, regression=True), "sex", "other", 0.1, seed=10)
    result = analyse(w, reference, manifest, CFG)
    now = datetime.now(UTC)
    report = DriftReport("r", "diabetes-mixed", now, now, now, now, {}, versions=[result])
    reg = drift_registry(report)
    ver = {"model": "diabetes-mixed", "version": "1"}
    share = reg.get_sample_value("vigil_drift_feature_unseen_share", {**ver, "feature": "sex"})
    assert share == pytest.approx(result.unseen["sex"].share)
    mae = reg.get_sample_value("vigil_drift_performance", {**ver, "metric": "mae"})
    assert result.performance is not None and result.performance.current is not None
    assert mae == pytest.approx(result.performance.current["mae"])
    assert reg.get_sample_value("vigil_drift_performance", {**ver, "metric": "accuracy"}) is None
    for sample in ("current", "reference"):
        median = {**ver, "quantile": "0.5", "sample": sample}
        assert reg.get_sample_value("vigil_drift_prediction_quantile", median) is not None
    write_html(report, tmp_path / "drift.html")
    page = (tmp_path / "drift.html").read_text()
    assert "regression quality" in page and "unseen in training" in page


# -- the three-class classifier -----------------------------------------------------------------


def test_a_multiclass_classifier_watches_its_predicted_class(
    wine: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = wine
    watched = Watched.of(manifest)
    assert (watched.prediction, watched.prediction_kind) == ("prediction", "categorical")
    clean = [
        analyse(window(reference, 150, seed, regression=False), reference, manifest, CFG)
        for seed in range(20)
    ]
    assert sum(r.flags.prediction_drift for r in clean) <= 1
    assert sum(r.flags.data_drift for r in clean) <= 1
    assert sum(r.flags.model_drift for r in clean) <= 1
    first = clean[0]
    assert first.prediction is not None and first.prediction.method == "jensenshannon"
    assert sum(bool(r.flags.estimated_model_drift) for r in clean) <= 1
    assert first.distribution is not None and set(first.distribution.current) == set(
        manifest.outputs.class_names
    )
    # traffic from one class only: the predicted mix moves
    one = reference[reference["target"] == manifest.outputs.class_names[0]]
    skewed = window(one, 150, 1, regression=False)
    result = analyse(skewed, reference, manifest, CFG)
    assert result.flags.prediction_drift and result.prediction is not None


def test_multiclass_label_noise_drops_accuracy_and_macro_f1(
    wine: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = wine
    names = manifest.outputs.class_names
    honest = window(reference, 300, 11, regression=False)
    rng = np.random.default_rng(11)
    flip = rng.random(len(honest)) < 0.3
    noisy = honest.copy()
    noisy.loc[flip, "label"] = [names[(names.index(v) + 1) % 3] for v in honest.loc[flip, "label"]]
    ok, bad = (analyse(w, reference, manifest, CFG) for w in (honest, noisy))
    assert ok.performance is not None and ok.performance.dropped is False
    assert bad.performance is not None and bad.performance.dropped is True
    cur, ref = bad.performance.current, bad.performance.reference
    assert cur is not None and ref is not None and set(cur) == {"accuracy", "f1_macro"}
    assert ref["f1_macro"] - cur["f1_macro"] > 0.2
    snapshot = quality_snapshot(bad.evidence)  # type: ignore[arg-type]
    assert snapshot is not None  # Evidently's multi-class preset renders the same rows


def test_multiclass_expected_metrics_on_a_case_computed_by_hand() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    predicted = np.array([0, 2])
    # right with 0.7 and 0.1; class 0: TP 0.7, FP 0.3, FN 0.1; class 1: never predicted, FN 1.0;
    # class 2: TP 0.1, FP 0.9, FN 0.1
    f1 = [1.4 / (1.4 + 0.4), 0.0, 0.2 / (0.2 + 1.0)]
    assert expected_multiclass(p, predicted) == pytest.approx(
        {"accuracy": 0.4, "f1_macro": sum(f1) / 3}
    )
    # two classes: the same numbers as the binary estimate
    q = np.random.default_rng(0).uniform(0, 1, 50)
    two = np.column_stack([1 - q, q])
    binary = (q > 0.4).astype(np.int64)
    assert expected_multiclass(two, binary) == pytest.approx(
        expected_metrics(q, binary.astype(float))
    )


def test_multiclass_band_holds_the_realized_accuracy_of_labels_drawn_from_p() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet([1.0, 1.0, 1.0], 400)
    predicted = p.argmax(axis=1)
    lo, hi = band_multiclass(p, predicted, draws=400, seed=1)["accuracy"]
    inside = 0
    for _ in range(200):
        labels = (rng.random((400, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
        inside += lo <= float(np.mean(labels == predicted)) <= hi
    assert inside >= 180
    assert lo < expected_multiclass(p, predicted)["accuracy"] < hi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_estimate_follows_traffic_to_unsure_rows_without_labels(
    wine: tuple[pd.DataFrame, Manifest], seed: int
) -> None:
    reference, manifest = wine
    names = manifest.outputs.class_names
    train = reference[reference["split"] == "train"]
    unsure = train[train[[f"proba_{n}" for n in names]].max(axis=1) < 0.8]
    shifted = window(unsure, 150, seed, regression=False)
    realized = analyse(shifted, reference, manifest, CFG)
    blind = analyse(shifted.assign(label=None), reference, manifest, CFG)
    clean = analyse(window(reference, 150, seed, regression=False), reference, manifest, CFG)
    est, base = blind.estimate, clean.estimate
    assert est is not None and est.estimated is not None and est.band is not None
    assert base is not None and base.estimated is not None
    assert realized.performance is not None and realized.performance.current is not None
    truth = realized.performance.current["accuracy"]
    guess = est.estimated["accuracy"]
    print(f"seed {seed}: estimated {guess:.3f} {est.band}, realized {truth:.3f}")
    assert abs(guess - truth) <= 0.06
    assert guess < base.estimated["accuracy"]  # less sure traffic, lower expected accuracy
    assert est.calibration_rows > 0 and est.rows == 150


def test_multiclass_calibration_survives_the_cache(wine: tuple[pd.DataFrame, Manifest]) -> None:
    reference, manifest = wine
    stats = ReferenceStats.compute(reference, "b" * 64, Watched.of(manifest), seed=0)
    assert not isinstance(stats.calibration, str) and len(stats.calibration.per_class) == 3
    again = ReferenceStats.from_json(json.loads(json.dumps(stats.to_json())))
    w = window(reference, 150, 12, regression=False).assign(label=None)
    assert (
        analyse(w, reference, manifest, CFG, again).to_dict()
        == analyse(w, reference, manifest, CFG).to_dict()
    )


def test_many_distinct_new_values_do_not_raise_the_threshold(
    mixed: tuple[pd.DataFrame, Manifest],
) -> None:
    reference, manifest = mixed
    w = window(reference, 400, 13, regression=True)
    w.loc[:199, "sex"] = [f"new-{i}" for i in range(200)]  # half the rows, each its own value
    result = analyse(w, reference, manifest, CFG)
    sex = result.features["sex"]
    assert sex.drifted and sex.threshold == pytest.approx(CFG.categorical_threshold(400, 442, 3))
    assert (
        result.unseen["sex"].share == pytest.approx(0.5) and len(result.unseen["sex"].values) == 5
    )


def test_page_of_a_multiclass_classifier(
    wine: tuple[pd.DataFrame, Manifest], tmp_path: Path
) -> None:
    reference, manifest = wine
    result = analyse(window(reference, 150, 14, regression=False), reference, manifest, CFG)
    assert result.evidence is not None and result.evidence.categorical == ["prediction"]
    snapshot = drift_snapshot(result.evidence)
    prediction = next(
        m for m in snapshot.dict()["metrics"] if m["config"].get("column") == "prediction"
    )
    assert result.prediction is not None
    assert prediction["value"] == pytest.approx(result.prediction.score, rel=1e-9)
    now = datetime.now(UTC)
    write_html(
        DriftReport("r", "wine", now, now, now, now, {}, versions=[result]), tmp_path / "p.html"
    )
    page = (tmp_path / "p.html").read_text()
    assert "classification quality" in page and "estimated accuracy (CBPE)" in page


def test_history_keeps_a_regressors_realized_mae(mixed: tuple[pd.DataFrame, Manifest]) -> None:
    reference, manifest = mixed
    result = analyse(window(reference, 200, 15, regression=True), reference, manifest, CFG)
    now = datetime.now(UTC)
    fields = trend_fields(DriftReport("r", "m", now, now, now, now, {}, versions=[result]))
    assert result.performance is not None and result.performance.current is not None
    assert fields["realized_mae"] == pytest.approx(result.performance.current["mae"])
    assert fields["realized_accuracy"] is None and fields["estimated_accuracy"] is None
