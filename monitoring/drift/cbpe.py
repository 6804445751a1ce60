"""Confidence-based performance estimation (CBPE): a classifier's accuracy and F1 on a window
whose labels have not arrived, from its own calibrated probabilities.

Method as NannyML describes it ("Confidence-based Performance Estimation (CBPE)",
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html):
if the positive-class probability ``p`` is calibrated, a row predicted positive is a true
positive with probability ``p`` and a false positive with ``1 - p`` (a row predicted negative is a
false negative with ``p`` and a true negative with ``1 - p``). Summed over the window these give the
expected confusion matrix, and from it expected accuracy and F1. Probabilities are calibrated on
the reference's labelled validation rows with isotonic regression when that helps on held-out
folds (NannyML also calibrates only when needed; it judges by the expected calibration error, we
by the Brier score, which needs no bins and so is steadier on a few hundred validation rows).

A multi-class classifier is estimated the same way, one class against the rest (NannyML's
multiclass CBPE): each class's probability is calibrated on its own, the rows renormalised to sum
to one; a row predicted ``c`` is right with probability ``p_c``, so the expected accuracy is the
mean ``p`` of the predicted class, and each class's expected TP/FP/FN give its F1 (macro: their
mean). A regressor has no probabilities and is not estimated.

Assumptions, and so limits: P(label | inputs) is unchanged (covariate shift only) and the
calibration learnt on the reference holds in the region the window comes from. A change of the
label given the inputs (concept drift, for example labels flipped) is invisible to it; realized
performance on feedback labels catches that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from model_store.log_columns import LABEL_COLUMN, PREDICTION_COLUMN, SPLIT_COLUMN, proba_column
from monitoring.drift.config import DriftConfig
from monitoring.drift.result import PERFORMANCE_METRICS, Estimate

VALIDATION = "validation"
_BINS = 10
_FOLDS = 5
_DRAW_BUDGET = 2_000_000  # random numbers held at once by band()


@dataclass(frozen=True, slots=True)
class Calibrator:
    """Isotonic calibration as its step points (``None``: the probabilities are left as they
    are); linear between them and clipped at the ends, as ``IsotonicRegression.predict`` is, and
    storable beside the reference."""

    isotonic: tuple[np.ndarray, np.ndarray] | None

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.isotonic is None:
            return p
        x, y = self.isotonic
        calibrated: np.ndarray = np.interp(p, x, y)  # np.interp holds the end values outside
        return calibrated


@dataclass(frozen=True, slots=True)
class Calibration:
    """What CBPE needs of the reference: depends on it alone, so it is computed once and kept
    in ``reference_stats.json``."""

    calibrator: Calibrator
    """Binary: the positive class's calibration (multi-class: unused, left as it is)."""
    rows: int
    reference: dict[str, float]
    """Expected metrics of the calibrated validation rows."""
    per_class: tuple[Calibrator, ...] = ()
    """Multi-class: each class's one-vs-rest calibration, in class order (binary: empty)."""


def calibration_error(p: np.ndarray, y: np.ndarray) -> float:
    """Expected calibration error over ten equal-width bins of ``p``."""
    bins = np.minimum((p * _BINS).astype(int), _BINS - 1)
    error = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        error += in_bin.mean() * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(error)


def _brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def _isotonic(p: np.ndarray, y: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)


def fit_calibrator(p: np.ndarray, y: np.ndarray, seed: int = 0) -> Calibrator:
    """Isotonic calibration if its out-of-fold probabilities score better (Brier) than ``p``."""
    if min(np.bincount(y.astype(int), minlength=2)) < _FOLDS:
        return Calibrator(None)  # too few of a class to judge a calibration on held-out folds
    out_of_fold = np.empty_like(p)
    folds = StratifiedKFold(n_splits=_FOLDS, shuffle=True, random_state=seed)
    for fit_idx, test_idx in folds.split(p, y):
        out_of_fold[test_idx] = _isotonic(p[fit_idx], y[fit_idx]).predict(p[test_idx])
    if _brier(out_of_fold, y) < _brier(p, y):
        fitted = _isotonic(p, y)
        return Calibrator((fitted.X_thresholds_, fitted.y_thresholds_))
    return Calibrator(None)


def expected_metrics(p: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Expected accuracy and macro F1 from calibrated ``p`` and the predicted labels (0/1)."""
    tp = float(np.sum(p * predicted))
    fp = float(np.sum((1 - p) * predicted))
    fn = float(np.sum(p * (1 - predicted)))
    tn = float(np.sum((1 - p) * (1 - predicted)))
    return {
        "accuracy": (tp + tn) / len(p),
        "f1_macro": (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2,
    }


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0


def band(p: np.ndarray, predicted: np.ndarray, draws: int, seed: int) -> dict[str, list[float]]:
    """The central 95 % of the realized metrics if labels were drawn from ``p``: how far the
    labels, once they arrive, may fall from the estimate by chance alone."""
    rng = np.random.default_rng(seed)
    pred = predicted.astype(bool)
    positives, negatives = np.empty(draws), np.empty(draws)  # true labels among pred. pos./neg.
    # a few million draws at a time: a 50,000-row window times 200 draws would need 10^7 floats
    step = max(1, _DRAW_BUDGET // max(len(p), 1))
    for start in range(0, draws, step):
        labels = rng.random((min(step, draws - start), len(p))) < p  # one row per draw
        positives[start : start + len(labels)] = labels[:, pred].sum(axis=1)
        negatives[start : start + len(labels)] = labels[:, ~pred].sum(axis=1)
    tp, fn = positives, negatives
    fp = pred.sum() - tp
    tn = (~pred).sum() - fn
    accuracy = (tp + tn) / len(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        f1_neg = np.nan_to_num(2 * tn / (2 * tn + fn + fp))
    f1_macro = (f1_pos + f1_neg) / 2
    return {
        name: [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
        for name, values in (("accuracy", accuracy), ("f1_macro", f1_macro))
    }


def calibrated(probas: np.ndarray, calibrators: tuple[Calibrator, ...]) -> np.ndarray:
    """Each class's probability through its calibrator, each row renormalised to sum to 1 (a
    row all of whose calibrated probabilities are 0 keeps its raw ones)."""
    raw = probas.clip(0.0, 1.0)
    out = np.column_stack([cal(raw[:, k]) for k, cal in enumerate(calibrators)])
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), raw)


def expected_multiclass(p: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Expected accuracy and macro F1 of rows with calibrated class probabilities ``p`` (one row
    per row, one column per class) and predicted class indices ``predicted``."""
    rows = np.arange(len(p))
    right = p[rows, predicted]
    f1 = []
    for k in range(p.shape[1]):
        mine = predicted == k
        tp = float(np.sum(p[mine, k]))
        fp = float(np.sum(1 - p[mine, k]))
        fn = float(np.sum(p[~mine, k]))
        f1.append(_f1(tp, fp, fn))
    return {"accuracy": float(right.mean()), "f1_macro": float(np.mean(f1))}


def band_multiclass(
    p: np.ndarray, predicted: np.ndarray, draws: int, seed: int
) -> dict[str, list[float]]:
    """:func:`band` of a multi-class classifier: labels drawn per row from its probabilities."""
    rng = np.random.default_rng(seed)
    n, classes = p.shape
    cumulative = np.cumsum(p, axis=1)
    cumulative[:, -1] = 1.0  # rounding must not leave a draw above the last class
    accuracy, f1_macro = np.empty(draws), np.empty(draws)
    step = max(1, _DRAW_BUDGET // max(n * classes, 1))
    for start in range(0, draws, step):
        count = min(step, draws - start)
        u = rng.random((count, n, 1))
        labels = (u > cumulative[None, :, :]).sum(axis=2)  # one row of labels per draw
        accuracy[start : start + count] = (labels == predicted).mean(axis=1)
        f1 = np.zeros(count)
        for k in range(classes):
            mine = predicted == k
            tp = (labels[:, mine] == k).sum(axis=1)
            fp = mine.sum() - tp
            fn = (labels[:, ~mine] == k).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                f1 += np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        f1_macro[start : start + count] = f1 / classes
    return {
        name: [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
        for name, values in (("accuracy", accuracy), ("f1_macro", f1_macro))
    }


def _calibrate_multiclass(
    reference: pd.DataFrame, class_names: list[str], seed: int
) -> Calibration | str:
    probas = [proba_column(c) for c in class_names]
    missing = [c for c in probas if c not in reference.columns]
    if missing:
        return f"not estimated: the reference has no class probabilities {missing}"
    calib = _labelled_validation(reference, class_names, probas[0])
    calib = calib[calib[probas].notna().all(axis=1) & calib[PREDICTION_COLUMN].isin(class_names)]
    if calib[LABEL_COLUMN].nunique() < 2:
        return "the reference has no labelled rows of several classes to calibrate on"
    p = calib[probas].to_numpy(dtype=np.float64).clip(0.0, 1.0)
    y = calib[LABEL_COLUMN].to_numpy()
    per_class = tuple(
        fit_calibrator(p[:, k], (y == c).astype(np.int64), seed) for k, c in enumerate(class_names)
    )
    predicted = _class_index(calib[PREDICTION_COLUMN], class_names)
    ref_metrics = expected_multiclass(calibrated(p, per_class), predicted)
    return Calibration(Calibrator(None), len(calib), ref_metrics, per_class)


def _class_index(labels: pd.Series, class_names: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    codes: np.ndarray = labels.map(index).to_numpy(dtype=np.int64)
    return codes


def calibrate(
    reference: pd.DataFrame, class_names: list[str], pred_col: str, seed: int
) -> Calibration | str:
    """The calibration learnt on the reference's labelled validation rows, or why there is none."""
    if not class_names:
        return (
            "not estimated: CBPE estimates a classifier's accuracy from its probabilities; a "
            "regressor's errors are measured on feedback labels only"
        )
    if len(class_names) > 2:
        return _calibrate_multiclass(reference, class_names, seed)
    if len(class_names) != 2:
        return "not estimated: CBPE needs a classifier of at least two classes"
    positive = class_names[1]
    calib = _labelled_validation(reference, class_names, pred_col)
    if calib[LABEL_COLUMN].nunique() < 2:
        return "the reference has no labelled rows of both classes to calibrate on"
    y_ref = (calib[LABEL_COLUMN] == positive).to_numpy(dtype=np.int64)
    calibrator = fit_calibrator(calib[pred_col].to_numpy(dtype=np.float64), y_ref, seed)
    ref_metrics = expected_metrics(*_inputs(calib, pred_col, positive, calibrator))
    return Calibration(calibrator, len(calib), ref_metrics)


def estimate(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    class_names: list[str],
    pred_col: str,
    cfg: DriftConfig,
    realized: dict[str, float] | None,
    calibration: Calibration | str | None = None,
) -> Estimate:
    """CBPE of ``current`` (the window's analysed rows, sampled like the drift tests) against
    the reference's validation rows (``calibration``: what :func:`calibrate` made of them, when
    it was kept from an earlier run)."""
    base = Estimate(rows=0, tolerance=cfg.performance_tolerance, realized=realized)
    if calibration is None:
        calibration = calibrate(reference, class_names, pred_col, cfg.seed)
    if isinstance(calibration, str):
        return replace(base, note=calibration)
    if calibration.per_class:
        return _estimate_multiclass(current, class_names, cfg, realized, calibration, base)
    if pred_col not in current.columns or PREDICTION_COLUMN not in current.columns:
        return replace(base, note="the window has no probability or predicted class to estimate on")
    rows = current[[pred_col, PREDICTION_COLUMN]]
    window = rows[rows[pred_col].notna() & rows[PREDICTION_COLUMN].isin(class_names)]
    if window.empty:
        return replace(base, note="no row of the window has a probability and a predicted class")
    calibrator, ref_metrics = calibration.calibrator, calibration.reference
    p, predicted = _inputs(window, pred_col, class_names[1], calibrator)
    est = expected_metrics(p, predicted)
    dropped = any(ref_metrics[m] - est[m] > cfg.performance_tolerance for m in PERFORMANCE_METRICS)
    return Estimate(
        rows=len(window),
        tolerance=cfg.performance_tolerance,
        calibrated=calibrator.isotonic is not None,
        calibration_rows=calibration.rows,
        estimated=est,
        band=band(p, predicted, cfg.estimate_draws, cfg.seed),
        reference=ref_metrics,
        realized=realized,
        dropped=dropped,
    )


def _estimate_multiclass(
    current: pd.DataFrame,
    class_names: list[str],
    cfg: DriftConfig,
    realized: dict[str, float] | None,
    calibration: Calibration,
    base: Estimate,
) -> Estimate:
    probas = [proba_column(c) for c in class_names]
    if any(c not in current.columns for c in [*probas, PREDICTION_COLUMN]):
        return replace(
            base, note="the window has no probabilities or predicted class to estimate on"
        )
    rows = current[
        current[probas].notna().all(axis=1) & current[PREDICTION_COLUMN].isin(class_names)
    ]
    if rows.empty:
        return replace(base, note="no row of the window has probabilities and a predicted class")
    p = calibrated(rows[probas].to_numpy(dtype=np.float64), calibration.per_class)
    predicted = _class_index(rows[PREDICTION_COLUMN], class_names)
    est = expected_multiclass(p, predicted)
    ref_metrics = calibration.reference
    dropped = any(ref_metrics[m] - est[m] > cfg.performance_tolerance for m in PERFORMANCE_METRICS)
    return Estimate(
        rows=len(rows),
        tolerance=cfg.performance_tolerance,
        calibrated=any(c.isotonic is not None for c in calibration.per_class),
        calibration_rows=calibration.rows,
        estimated=est,
        band=band_multiclass(p, predicted, cfg.estimate_draws, cfg.seed),
        reference=ref_metrics,
        realized=realized,
        dropped=dropped,
    )


def _labelled_validation(
    reference: pd.DataFrame, class_names: list[str], pred_col: str
) -> pd.DataFrame:
    calib = reference[reference[SPLIT_COLUMN] == VALIDATION]
    if calib.empty:  # a reference without a hold-out: calibrate on all of it
        calib = reference
    return calib[calib[LABEL_COLUMN].isin(class_names) & calib[pred_col].notna()]


def _inputs(
    rows: pd.DataFrame, pred_col: str, positive: str, calibrator: Calibrator
) -> tuple[np.ndarray, np.ndarray]:
    p = calibrator(rows[pred_col].to_numpy(dtype=np.float64).clip(0.0, 1.0))
    predicted = (rows[PREDICTION_COLUMN] == positive).to_numpy(dtype=np.float64)
    return p, predicted
