"""The drift analysis on windows built from the reference: honest on null windows, sensitive to
a one-SD shift and to label noise, and consistent with Evidently's own report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_store.manifest import Manifest, PiiPolicy
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import DriftInputError, analyse
from monitoring.drift.html import drift_snapshot
from monitoring.drift.result import Status

CFG = DriftConfig()  # the defaults the job uses with default settings


def window(reference: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Rows drawn with replacement from the reference, shaped like read_predictions' output."""
    w = reference.sample(rows, replace=True, random_state=seed).reset_index(drop=True)
    w = w.rename(columns={"target": "label"}).drop(columns=["split"])
    w["version"] = 1
    return w


def flip(labels: pd.Series, share: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    out = labels.copy()
    chosen = rng.random(len(out)) < share
    out[chosen] = np.where(out[chosen] == "benign", "malignant", "benign")
    return out


def test_windows_from_the_reference_are_not_flagged(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    results = [
        analyse(window(reference, 500, seed), reference, manifest, CFG) for seed in range(20)
    ]
    dataset_flags = sum(r.flags.data_drift for r in results)
    feature_flags = sum(len(r.drifted_features) for r in results)
    print(f"20 null windows: {dataset_flags} dataset-drift flags, {feature_flags} feature flags")
    assert dataset_flags <= 1
    # the per-feature test is honest too, not only the dataset vote: ≤ 1 % of 600 feature tests
    assert feature_flags <= 6
    assert sum(r.flags.prediction_drift for r in results) <= 1
    assert sum(r.flags.model_drift for r in results) <= 1
    assert all(r.sampled_rows == 500 and r.status in (Status.OK, Status.DRIFT) for r in results)


@pytest.mark.parametrize("feature", ["mean_radius", "area_error", "worst_fractal_dimension"])
def test_one_feature_shifted_one_sd_is_flagged_for_that_feature(
    reference: pd.DataFrame, manifest: Manifest, feature: str
) -> None:
    w = window(reference, 500, seed=7)
    w[feature] += reference[feature].std()
    result = analyse(w, reference, manifest, CFG)
    assert result.features[feature].drifted
    assert feature in result.drifted_features
    assert len(result.drifted_features) <= 2  # the shift does not smear onto the others


def test_thirty_percent_label_flip_is_model_drift(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    honest = window(reference, 500, seed=3)
    noisy = honest.assign(label=flip(honest["label"], 0.3, seed=3))
    ok = analyse(honest, reference, manifest, CFG)
    bad = analyse(noisy, reference, manifest, CFG)
    assert ok.performance is not None and ok.performance.dropped is False
    assert not ok.flags.model_drift
    assert bad.performance is not None and bad.performance.dropped is True
    assert bad.flags.model_drift and bad.status is Status.DRIFT
    assert bad.performance.current is not None and bad.performance.reference is not None
    drop = bad.performance.reference["accuracy"] - bad.performance.current["accuracy"]
    assert drop > 0.2


def test_too_few_labels_leave_model_drift_unjudged(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    w = window(reference, 300, seed=4)
    w["label"] = flip(w["label"], 0.5, seed=4).astype(object)
    w.loc[CFG.min_labelled_rows - 1 :, "label"] = None  # only 49 rows keep feedback
    result = analyse(w, reference, manifest, CFG)
    assert result.performance is not None
    assert result.performance.labelled_rows == CFG.min_labelled_rows - 1
    assert result.performance.dropped is None and not result.flags.model_drift


def test_too_few_rows_is_insufficient_data_without_flags(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    w = window(reference, CFG.min_rows - 1, seed=5)
    w["mean_radius"] += 10 * reference["mean_radius"].std()
    result = analyse(w, reference, manifest, CFG)
    assert result.status is Status.INSUFFICIENT_DATA
    assert not result.flags.any() and result.features == {}
    assert result.to_dict()["rows"] == CFG.min_rows - 1


def test_large_windows_are_sampled_to_the_cap_reproducibly(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    cfg = DriftConfig(max_rows=1000)
    w = window(reference, 3000, seed=6)
    first, second = (analyse(w, reference, manifest, cfg) for _ in range(2))
    assert first.rows == 3000 and first.sampled_rows == 1000 and first.sample_cap == 1000
    assert first.to_dict()["features"] == second.to_dict()["features"]
    assert (
        analyse(w, reference, manifest, DriftConfig(max_rows=1000, seed=1)).to_dict()["features"]
        != first.to_dict()["features"]
    )


def test_pii_and_missing_features_are_skipped_with_a_reason(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    specs = [
        f.model_copy(update={"pii": PiiPolicy.HASH}) if f.name == "mean_texture" else f
        for f in manifest.features
    ]
    pii_manifest = manifest.model_copy(update={"features": specs})
    w = window(reference, 300, seed=8)
    w["mean_texture"] = "9f86d081884c7d659a2feaa0c55ad015"  # what the log holds for hashed PII
    w = w.drop(columns=["mean_area"])
    result = analyse(w, reference, pii_manifest, CFG)
    assert set(result.skipped_features) == {"mean_texture", "mean_area"}
    assert "PII" in result.skipped_features["mean_texture"]
    assert len(result.features) == 28


def test_a_reference_without_its_columns_is_refused(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    with pytest.raises(DriftInputError, match="lacks columns"):
        analyse(window(reference, 200, 1), reference.drop(columns=["target"]), manifest, CFG)


def test_json_numbers_equal_evidentlys_report(reference: pd.DataFrame, manifest: Manifest) -> None:
    w = window(reference, 400, seed=9)
    w["mean_smoothness"] += 0.5 * reference["mean_smoothness"].std()
    result = analyse(w, reference, manifest, CFG)
    assert result.evidence is not None
    snapshot = drift_snapshot(result.evidence)
    values = {
        m["config"]["column"]: m["value"]
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    verdicts = {
        t["name"].removeprefix("Value Drift for column "): t["status"].value == "FAIL"
        for t in snapshot.dict()["tests"]
        if t["name"].startswith("Value Drift for column ")
    }
    assert result.prediction is not None and result.prediction_column is not None
    ours = {**result.features, result.prediction_column: result.prediction}
    assert set(values) == set(ours)
    for column, drift in ours.items():
        assert values[column] == pytest.approx(drift.score, rel=1e-9)
        assert verdicts[column] == drift.drifted
