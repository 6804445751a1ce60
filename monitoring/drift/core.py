"""Drift of one served version: a window of its logged rows against its reference sample.

Knows nothing of the log store or files: ``current`` has the columns of
``service.iolog.reader.read_predictions`` (features, ``prediction``, ``proba_<class>`` of
classifiers, ``label``); ``reference`` is the version's ``reference.parquet`` (features,
``prediction``, ``proba_<class>`` of classifiers, ``target``, ``split``). What is watched for
each kind of model is decided in ``monitoring.drift.columns``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

from model_store.log_columns import LABEL_COLUMN, PREDICTION_COLUMN, SPLIT_COLUMN, proba_column
from model_store.manifest import Manifest
from monitoring.drift import cbpe
from monitoring.drift.columns import (
    CATEGORICAL,
    CLASSIFICATION_METRICS,
    ERROR_METRICS,
    ManifestKindError,
    Watched,
)
from monitoring.drift.config import DriftConfig
from monitoring.drift.result import (
    QUANTILES,
    ColumnDrift,
    Evidence,
    Flags,
    Performance,
    PredictionDistribution,
    Status,
    VersionResult,
)
from monitoring.drift.stats import column_drift, unseen
from monitoring.drift.weighting import dataset_verdict
from monitoring.drift.window import FEEDBACK_COLUMN, WindowSample

if TYPE_CHECKING:  # reference.py builds on this module
    from monitoring.drift.reference import ReferenceStats

VALIDATION = "validation"


class DriftInputError(ValueError):
    """The window or the reference sample cannot be analysed as they are."""


def watched_columns(manifest: Manifest) -> Watched:
    try:
        return Watched.of(manifest)
    except ManifestKindError as exc:
        raise DriftInputError(str(exc)) from exc


def analyse(
    current: pd.DataFrame | WindowSample,
    reference: pd.DataFrame,
    manifest: Manifest,
    cfg: DriftConfig,
    stats: ReferenceStats | None = None,
    segment_key: str | None = None,
) -> VersionResult:
    """Data, prediction and model drift of ``current`` (one version's window, or what was
    gathered of it while streaming) vs ``reference``; ``stats``: what was computed of this
    reference before (``reference_stats.json``), else it is computed here. ``segment_key``: the
    feature ``current`` is one value of, not compared (it is constant there by construction)."""
    window = (
        current
        if isinstance(current, WindowSample)
        else WindowSample.of(current, cfg.max_rows, cfg.seed)
    )
    rows = window.rows
    result = VersionResult(
        version=manifest.version,
        status=Status.INSUFFICIENT_DATA,
        rows=rows,
        sample_cap=cfg.max_rows,
    )
    if rows < cfg.min_rows:
        result.message = f"{rows} rows in the window, {cfg.min_rows} needed"
        return result
    watched = watched_columns(manifest)
    class_names = list(watched.class_names)
    pred_col = watched.prediction
    _check_reference(reference, manifest, pred_col)
    features, skipped = _usable_features(window, reference, manifest, watched, stats, segment_key)
    # the predicted label (and a multi-class model's probabilities) ride along for CBPE, which
    # estimates on the same analysed rows
    probas = [proba_column(c) for c in class_names] if len(class_names) > 2 else []
    wanted = [*features, pred_col, PREDICTION_COLUMN, *probas]
    sample = window.sample[list(dict.fromkeys(c for c in wanted if c in window.sample.columns))]
    tester = _Tester(reference, sample, watched, cfg)

    drift = {f: tester.drift(f) for f in features}
    verdict = dataset_verdict(drift, manifest.feature_importance, cfg)
    prediction = None
    if pred_col in sample.columns and sample[pred_col].notna().any():
        prediction = tester.drift(pred_col)
    if watched.regression:
        performance, labelled, validation = _regression_performance(
            window.labelled, reference, cfg, stats
        )
    else:
        performance, labelled, validation = _performance(
            window.labelled, reference, class_names, cfg, stats
        )
    calibration = None if stats is None else stats.calibration
    estimate = cbpe.estimate(
        sample, reference, class_names, pred_col, cfg, performance.current, calibration
    )

    flags = Flags(
        data_drift=verdict.drifted,
        prediction_drift=bool(prediction and prediction.drifted),
        model_drift=bool(performance.dropped),
        estimated_model_drift=bool(estimate.dropped),
    )
    result.status = Status.DRIFT if flags.any() else Status.OK
    result.sampled_rows = len(sample)
    result.reference_rows = len(reference)
    result.flags = flags
    result.drifted_share = verdict.share
    result.drifted_features = [r.feature for r in verdict.ranking]
    result.verdict = verdict
    result.estimate = estimate
    result.features = drift
    result.skipped_features = skipped
    result.unseen = {
        f: unseen(sample[f], watched.categories[f])
        for f in features
        if watched.kind(f) == CATEGORICAL and watched.categories.get(f)
    }
    result.prediction_column = pred_col
    result.prediction = prediction
    result.distribution = _distribution(sample, reference, watched)
    result.performance = performance
    result.message = _message(result, len(features))
    categorical = [c for c in [*features, pred_col] if watched.kind(c) == CATEGORICAL]
    result.evidence = Evidence(
        current=sample,
        reference=reference[list(dict.fromkeys([*features, pred_col]))],
        drift=drift,
        categorical=categorical,
        prediction_column=pred_col,
        prediction=prediction,
        drift_share=cfg.drift_share,
        labelled=_for_the_page(labelled, cfg),
        validation=validation,
        class_names=class_names,
        task=watched.task,
    )
    return result


class _Tester:
    """One column's drift test, by its kind: the numeric method with the numeric threshold, or
    the categorical method with a threshold for its number of categories."""

    def __init__(
        self, reference: pd.DataFrame, sample: pd.DataFrame, watched: Watched, cfg: DriftConfig
    ) -> None:
        self._reference, self._sample, self._watched, self._cfg = reference, sample, watched, cfg
        self._numeric_threshold = cfg.threshold(len(sample), len(reference))

    def drift(self, column: str) -> ColumnDrift:
        ref, cur, cfg = self._reference[column], self._sample[column], self._cfg
        kind = self._watched.kind(column)
        if kind != CATEGORICAL:
            return column_drift(ref, cur, cfg.method, self._numeric_threshold)
        ref_present, cur_present = ref.dropna().astype(str), cur.dropna().astype(str)
        known = set(ref_present.unique())
        # values the reference never had count as one category more: a window of a thousand
        # distinct new values must not raise the noise allowance a thousandfold
        categories = len(known) + int(not cur_present.isin(known).all())
        threshold = cfg.categorical_threshold(len(cur_present), len(ref_present), categories)
        return column_drift(ref, cur, cfg.cat_method, threshold, kind)


def _distribution(
    sample: pd.DataFrame, reference: pd.DataFrame, watched: Watched
) -> PredictionDistribution | None:
    if PREDICTION_COLUMN not in sample.columns or sample[PREDICTION_COLUMN].isna().all():
        return None
    if watched.regression:

        def quantiles(values: pd.Series) -> dict[str, float]:
            v = pd.to_numeric(values, errors="coerce").replace([-np.inf, np.inf], np.nan).dropna()
            return {f"{q:g}": float(v.quantile(q)) for q in QUANTILES} if len(v) else {}

        return PredictionDistribution(
            "quantiles",
            quantiles(sample[PREDICTION_COLUMN]),
            quantiles(reference[PREDICTION_COLUMN]),
        )

    def shares(values: pd.Series) -> dict[str, float]:
        counts = values.dropna().astype(str).value_counts(normalize=True)
        return {c: float(counts.get(c, 0.0)) for c in watched.class_names}

    return PredictionDistribution(
        "class_shares", shares(sample[PREDICTION_COLUMN]), shares(reference[PREDICTION_COLUMN])
    )


def _for_the_page(labelled: pd.DataFrame | None, cfg: DriftConfig) -> pd.DataFrame | None:
    """The labelled rows drift.html shows quality on: a seeded sample of at most ``max_rows``,
    so rendering does not grow with the window (drift.json's numbers are on all of them)."""
    if labelled is None or len(labelled) <= cfg.max_rows:
        return labelled
    return labelled.sample(n=cfg.max_rows, random_state=cfg.seed).sort_index()


def _check_reference(reference: pd.DataFrame, manifest: Manifest, pred_col: str) -> None:
    needed = [*manifest.feature_names, PREDICTION_COLUMN, pred_col, LABEL_COLUMN, SPLIT_COLUMN]
    missing = [c for c in needed if c not in reference.columns]
    if missing:
        raise DriftInputError(
            f"reference sample of {manifest.name} v{manifest.version} lacks columns {missing}"
        )
    if reference.empty:
        raise DriftInputError(f"reference sample of {manifest.name} v{manifest.version} is empty")


def _usable_features(
    window: WindowSample,
    reference: pd.DataFrame,
    manifest: Manifest,
    watched: Watched,
    stats: ReferenceStats | None,
    segment_key: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    current = window.sample
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for spec in manifest.features:
        name = spec.name
        if name == segment_key:
            skipped[name] = "the segment key: one value in each segment, so not compared"
        elif spec.pii is not None:
            # hashed values cannot be compared with the raw reference; dropped ones are not logged
            skipped[name] = f"PII policy {spec.pii.value}: not comparable with the reference"
        elif name not in current.columns:
            skipped[name] = "not in the logged window"
        elif watched.kind(name) == CATEGORICAL:
            if not current[name].notna().any():
                skipped[name] = "no value in the window"
            elif not reference[name].notna().any():
                skipped[name] = "no value in the reference"
            else:
                usable.append(name)
        elif not pd.api.types.is_numeric_dtype(current[name]):
            skipped[name] = f"logged as {current[name].dtype}, not numeric"
        elif name not in window.finite:
            skipped[name] = "no finite value in the window"
        elif not _finite_in(reference, name, stats):
            skipped[name] = "no finite value in the reference"
        else:
            usable.append(name)
    if not usable:
        raise DriftInputError(f"no feature of {manifest.name} can be compared: {skipped}")
    return usable, skipped


def _finite_in(reference: pd.DataFrame, name: str, stats: ReferenceStats | None) -> bool:
    if stats is not None:
        return name in stats.finite
    return bool(np.isfinite(reference[name].to_numpy(dtype=np.float64)).any())


def quality(y_true: pd.Series, y_pred: pd.Series) -> dict[str, float]:
    # as integer codes of one factorisation: the same classes, so the same numbers, but
    # sklearn's checks on a million string labels took seconds
    codes, _ = pd.factorize(pd.concat([y_true, y_pred], ignore_index=True))
    true, pred = codes[: len(y_true)], codes[len(y_true) :]
    return {
        "accuracy": float(accuracy_score(true, pred)),
        "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
    }


def _performance(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    class_names: list[str],
    cfg: DriftConfig,
    stats: ReferenceStats | None = None,
) -> tuple[Performance, pd.DataFrame | None, pd.DataFrame | None]:
    """Quality on every labelled row of the window (not the sample) vs the validation rows;
    ``current`` holds the window's labelled rows."""
    if FEEDBACK_COLUMN in current.columns and PREDICTION_COLUMN in current.columns:
        labels = current[FEEDBACK_COLUMN]
        mask = labels.notna() & labels.isin(class_names) & current[PREDICTION_COLUMN].notna()
    else:
        mask = pd.Series(False, index=current.index)
    n = int(mask.sum())
    base = Performance(
        labelled_rows=n,
        min_labelled_rows=cfg.min_labelled_rows,
        tolerance=cfg.performance_tolerance,
    )
    if n < cfg.min_labelled_rows:
        return base, None, None
    probas = [proba_column(c) for c in class_names if proba_column(c) in current.columns]
    labelled = current.loc[mask, [FEEDBACK_COLUMN, PREDICTION_COLUMN, *probas]].rename(
        columns={FEEDBACK_COLUMN: LABEL_COLUMN}
    )
    validation = reference[reference[SPLIT_COLUMN] == VALIDATION]
    if validation.empty:  # a reference without a hold-out: compare with all of it
        validation = reference
    validation = validation[[LABEL_COLUMN, PREDICTION_COLUMN, *probas]]
    # an ONNX-only model registered with an unlabelled reference has nothing to compare with
    validation = validation[validation[LABEL_COLUMN].isin(class_names)]
    cur = quality(labelled[LABEL_COLUMN], labelled[PREDICTION_COLUMN])
    if validation.empty:
        return replace(base, current=cur), labelled, None
    ref = (
        quality(validation[LABEL_COLUMN], validation[PREDICTION_COLUMN])
        if stats is None or stats.quality is None
        else stats.quality
    )
    dropped = any(ref[m] - cur[m] > cfg.performance_tolerance for m in CLASSIFICATION_METRICS)
    performance = Performance(
        labelled_rows=n,
        min_labelled_rows=cfg.min_labelled_rows,
        tolerance=cfg.performance_tolerance,
        current=cur,
        reference=ref,
        dropped=dropped,
    )
    return performance, labelled, validation


def regression_quality(y_true: pd.Series, y_pred: pd.Series) -> dict[str, float]:
    """MAE, RMSE and R², as Evidently's regression metrics compute them (scikit-learn's)."""
    true, pred = y_true.to_numpy(np.float64), y_pred.to_numpy(np.float64)
    return {
        "mae": float(mean_absolute_error(true, pred)),
        "rmse": float(root_mean_squared_error(true, pred)),
        "r2": float(r2_score(true, pred)) if len(true) > 1 else float("nan"),
    }


def numeric_labelled(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows whose label and prediction are finite numbers, as float64 ``target``/``prediction``
    (feedback labels of regressors are logged as text: the float's repr)."""
    if label not in frame.columns or PREDICTION_COLUMN not in frame.columns:
        return pd.DataFrame({LABEL_COLUMN: [], PREDICTION_COLUMN: []}, dtype=np.float64)
    y = pd.to_numeric(frame[label], errors="coerce").astype(np.float64)
    p = pd.to_numeric(frame[PREDICTION_COLUMN], errors="coerce").astype(np.float64)
    mask = np.isfinite(y.to_numpy()) & np.isfinite(p.to_numpy())
    return pd.DataFrame({LABEL_COLUMN: y[mask], PREDICTION_COLUMN: p[mask]})


def validation_rows(reference: pd.DataFrame) -> pd.DataFrame:
    validation = reference[reference[SPLIT_COLUMN] == VALIDATION]
    return reference if validation.empty else validation  # no hold-out: all of it


def _regression_performance(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    cfg: DriftConfig,
    stats: ReferenceStats | None = None,
) -> tuple[Performance, pd.DataFrame | None, pd.DataFrame | None]:
    """A regressor's errors on every labelled row of the window vs the validation rows'; model
    drift when MAE or RMSE rose by more than ``regression_tolerance`` of their reference value."""
    labelled = numeric_labelled(current, FEEDBACK_COLUMN)
    n = len(labelled)
    base = Performance(
        labelled_rows=n,
        min_labelled_rows=cfg.min_labelled_rows,
        tolerance=cfg.regression_tolerance,
        task="regression",
    )
    if n < cfg.min_labelled_rows:
        return base, None, None
    cur = regression_quality(labelled[LABEL_COLUMN], labelled[PREDICTION_COLUMN])
    validation = numeric_labelled(validation_rows(reference), LABEL_COLUMN)
    if validation.empty:
        return replace(base, current=cur), labelled, None
    ref = (
        regression_quality(validation[LABEL_COLUMN], validation[PREDICTION_COLUMN])
        if stats is None or stats.quality is None
        else stats.quality
    )
    dropped = any(cur[m] > ref[m] * (1 + cfg.regression_tolerance) for m in ERROR_METRICS)
    return replace(base, current=cur, reference=ref, dropped=dropped), labelled, validation


def _message(result: VersionResult, n_features: int) -> str:
    parts = [
        f"{result.rows} rows"
        + (f" (sampled {result.sampled_rows})" if result.sampled_rows < result.rows else "")
    ]
    drifted = result.drifted_features
    if drifted and result.verdict is not None:
        names = ", ".join(drifted[:5]) + (" …" if len(drifted) > 5 else "")
        parts.append(f"{len(drifted)}/{n_features} features drifted ({names}; {_rule(result)})")
    else:
        parts.append(f"no feature drifted of {n_features}")
    if result.prediction is not None and result.prediction.drifted:
        parts.append(f"prediction drift {_score(result.prediction)}")
    est = result.estimate
    if est is not None and est.estimated is not None and est.reference is not None:
        acc, ref_acc = est.estimated["accuracy"], est.reference["accuracy"]
        word = "estimated model drift: " if est.dropped else ""
        parts.append(f"{word}estimated accuracy {acc:.3f} vs {ref_acc:.3f} without labels")
    unseen = [f"{name} {u.share:.1%}" for name, u in result.unseen.items() if u.rows]
    if unseen:
        parts.append("unseen categories: " + ", ".join(unseen))
    perf = result.performance
    if perf is not None and perf.current is not None and perf.reference is not None:
        word = "model drift: " if perf.dropped else ""
        metric = "mae" if perf.task == "regression" else "accuracy"
        now, ref = perf.current[metric], perf.reference[metric]
        label = metric.upper() if metric == "mae" else metric
        parts.append(f"{word}{label} {now:.3f} vs {ref:.3f} on {perf.labelled_rows} labels")
    return "; ".join(parts)


def _rule(result: VersionResult) -> str:
    v = result.verdict
    assert v is not None
    verdict = "data drift" if v.drifted else "below"
    if v.rule == "importance":
        assert v.weighted_share is not None
        return f"importance-weighted share {v.weighted_share:.3f}, {verdict} {v.threshold}"
    fallback = ", no importance in the manifest" if v.note else ""
    return f"{verdict} the dataset share {v.threshold}{fallback}"


def _score(d: ColumnDrift) -> str:
    return f"{d.method} {d.score:.3f} ≥ {d.threshold:.3f}"
