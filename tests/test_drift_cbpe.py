"""CBPE: the expected confusion matrix on known answers, calibration when it helps, and on the demo
model an estimate that follows a covariate shift towards unsure rows without any label, while
flipped labels (concept drift) stay invisible to it and visible to realized performance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_store.manifest import Manifest
from monitoring.drift.cbpe import band, calibration_error, expected_metrics, fit_calibrator
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse
from tests.test_drift_core import flip, window

CFG = DriftConfig()
TRACKING = 0.05  # the estimate lands within this of the accuracy the withheld labels give
UNSURE = (0.1, 0.9)  # positive-class probabilities where the demo model is unsure


def test_expected_confusion_matrix_known_answer() -> None:
    # row 1 predicted positive with p 0.9: TP 0.9, FP 0.1; row 2 predicted negative, p 0.2:
    # FN 0.2, TN 0.8 → accuracy (0.9 + 0.8) / 2; F1+ = 1.8 / 2.1, F1- = 1.6 / 1.9
    m = expected_metrics(np.array([0.9, 0.2]), np.array([1.0, 0.0]))
    assert m["accuracy"] == pytest.approx(0.85)
    assert m["f1_macro"] == pytest.approx((1.8 / 2.1 + 1.6 / 1.9) / 2)
    coin = expected_metrics(np.full(10, 0.5), np.ones(10))
    assert coin["accuracy"] == pytest.approx(0.5)


def test_band_holds_the_realized_accuracy_of_labels_drawn_from_p() -> None:
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 500)
    predicted = (p > 0.5).astype(float)
    lo, hi = band(p, predicted, draws=400, seed=1)["accuracy"]
    inside = 0
    for _ in range(200):
        y = rng.random(500) < p
        inside += lo <= float(np.mean(y == predicted.astype(bool))) <= hi
    assert inside >= 180  # a 95 % band: about 190 of 200, 180 leaves room for chance
    assert lo < expected_metrics(p, predicted)["accuracy"] < hi


def test_overconfident_probabilities_are_calibrated_and_good_ones_left_alone() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 1, 2000)
    y = (rng.random(2000) < truth).astype(np.int64)
    overconfident = np.where(truth > 0.5, truth**0.2, truth**5)
    calibrator = fit_calibrator(overconfident, y)
    assert calibrator.isotonic is not None
    assert calibration_error(calibrator(overconfident), y) < 0.5 * calibration_error(
        overconfident, y
    )
    assert fit_calibrator(truth, y).isotonic is None


def _unsure_window(reference: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Covariate shift: 90 % of the traffic from training rows where the model is unsure, 10 %
    from the rest, each row with its own true label (so P(label | inputs) holds). Training rows
    only: the calibration is fitted on the validation rows and must not see these."""
    train = reference[reference["split"] == "train"]
    p = train["proba_benign"]
    unsure = (p > UNSURE[0]) & (p < UNSURE[1])
    k = int(0.9 * rows)
    w = pd.concat(
        [
            train[unsure].sample(k, replace=True, random_state=seed),
            train[~unsure].sample(rows - k, replace=True, random_state=seed + 1),
        ]
    )
    w = w.reset_index(drop=True).rename(columns={"target": "label"}).drop(columns=["split"])
    w["version"] = 1
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_follows_a_shift_to_unsure_rows_without_labels(
    reference: pd.DataFrame, manifest: Manifest, seed: int
) -> None:
    shifted = _unsure_window(reference, 400, seed)
    realized = analyse(shifted, reference, manifest, CFG)  # labels kept: the truth to compare
    blind = analyse(shifted.assign(label=None), reference, manifest, CFG)  # labels withheld
    est = blind.estimate
    assert est is not None and est.estimated is not None and est.reference is not None
    assert blind.performance is not None and not blind.performance.evaluated
    assert realized.performance is not None and realized.performance.current is not None
    truth = realized.performance.current["accuracy"]
    guess = est.estimated["accuracy"]
    print(f"seed {seed}: estimated {guess:.3f} {est.band}, realized {truth:.3f}")
    assert est.reference["accuracy"] - truth > CFG.performance_tolerance  # a real drop …
    assert abs(guess - truth) <= TRACKING  # … that the estimate follows
    assert est.dropped is True and blind.flags.estimated_model_drift
    assert not blind.flags.model_drift  # no labels: realized performance cannot judge


def test_clean_windows_do_not_flag_estimated_model_drift(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    flags = sum(
        bool(analyse(window(reference, 500, s), reference, manifest, CFG).estimate.dropped)  # type: ignore[union-attr]
        for s in range(20)
    )
    assert flags <= 1


def test_flipped_labels_escape_the_estimate_but_not_realized_performance(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    honest = window(reference, 500, seed=3)
    result = analyse(honest.assign(label=flip(honest["label"], 0.3, 3)), reference, manifest, CFG)
    est = result.estimate
    assert est is not None and est.estimated is not None and est.realized is not None
    assert est.dropped is False and not result.flags.estimated_model_drift  # the known limit
    assert result.flags.model_drift  # feedback labels show it
    assert est.estimated["accuracy"] - est.realized["accuracy"] > 0.2


def test_an_unlabelled_reference_gives_no_estimate_and_says_why(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    """An ONNX-only model registered with features only: nothing to calibrate on, nothing to
    compare feedback with, no importance; the run still ends with verdicts and notes."""
    unlabelled = reference.assign(target=None, split="validation")
    bare = manifest.model_copy(update={"feature_importance": None})
    result = analyse(window(reference, 300, seed=6), unlabelled, bare, CFG)
    assert result.estimate is not None and result.estimate.estimated is None
    assert "no labelled rows" in result.estimate.note and not result.flags.estimated_model_drift
    assert result.performance is not None and result.performance.current is not None
    assert result.performance.reference is None and result.performance.dropped is None
    assert result.verdict is not None and result.verdict.rule == "share"
