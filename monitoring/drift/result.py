"""The results of a drift run and their JSON form (schema: README.md, "Drift monitoring").

``SCHEMA_VERSION`` changes only when a field is removed or changes meaning; new fields may be
added without a bump, so readers must ignore keys they do not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
PERFORMANCE_METRICS = ("accuracy", "f1_macro")


class Status(StrEnum):
    OK = "ok"
    DRIFT = "drift"
    INSUFFICIENT_DATA = "insufficient_data"
    ERROR = "error"


# The run's status is the most severe of its versions': a broken analysis must not hide behind
# a healthy version, and one drifting version is enough to call the model drifting.
_SEVERITY = {Status.INSUFFICIENT_DATA: 0, Status.OK: 1, Status.DRIFT: 2, Status.ERROR: 3}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.INSUFFICIENT_DATA)


def _num(value: float | None) -> float | None:
    """JSON has no NaN; a score that could not be computed is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _metrics(values: dict[str, float] | None) -> dict[str, float | None] | None:
    return None if values is None else {k: _num(v) for k, v in values.items()}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    score: float
    method: str
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": _num(self.score),
            "method": self.method,
            "threshold": self.threshold,
            "drifted": self.drifted,
        }


@dataclass(frozen=True, slots=True)
class Unseen:
    """Values of a categorical feature in the window that training never saw."""

    share: float
    """Of the window's sampled rows with a value."""
    rows: int
    values: dict[str, int]
    """The most frequent unseen values and their counts (at most five, cut to 64 characters)."""

    def to_dict(self) -> dict[str, Any]:
        return {"share": _num(self.share), "rows": self.rows, "values": self.values}


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True, slots=True)
class PredictionDistribution:
    """What the model answered, in the window and on the reference: a regressor's quantiles of
    the predicted value (keys ``0.05`` … ``0.95``), a classifier's share of each predicted class."""

    kind: str
    """``quantiles`` or ``class_shares``."""
    current: dict[str, float]
    reference: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "current": {k: _num(v) for k, v in self.current.items()},
            "reference": {k: _num(v) for k, v in self.reference.items()},
        }


@dataclass(frozen=True, slots=True)
class RankedFeature:
    feature: str
    score: float
    importance: float | None
    """None when the manifest records no importance."""

    @property
    def impact(self) -> float:
        """What the ranking sorts by: importance times drift score (the score alone without one)."""
        weight = 1.0 if self.importance is None else self.importance
        return weight * self.score if math.isfinite(self.score) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "importance": self.importance,
            "score": _num(self.score),
            "impact": _num(self.impact),
        }


@dataclass(frozen=True, slots=True)
class DatasetVerdict:
    """How the dataset-drift flag was decided (``monitoring.drift.weighting``)."""

    rule: str
    drifted: bool
    share: float
    weighted_share: float | None
    threshold: float
    ranking: list[RankedFeature]
    note: str = ""
    importance: dict[str, float] | None = None
    """Per feature, from the manifest; None when it records none."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "share": _num(self.share),
            "weighted_share": _num(self.weighted_share),
            "drifted": self.drifted,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Estimate:
    """Performance estimated without labels (CBPE, ``monitoring.drift.cbpe``)."""

    rows: int
    tolerance: float
    method: str = "cbpe"
    calibrated: bool = False
    calibration_rows: int = 0
    estimated: dict[str, float] | None = None
    band: dict[str, list[float]] | None = None
    """Central 95 % of the metric over label draws from the calibrated probabilities."""
    reference: dict[str, float] | None = None
    """The same estimate on the reference's validation rows: the baseline of the drop."""
    realized: dict[str, float] | None = None
    """Quality on the window's labelled rows, when there were enough of them."""
    dropped: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "calibrated": self.calibrated,
            "calibration_rows": self.calibration_rows,
            "estimated": self.estimated,
            "band": self.band,
            "reference": self.reference,
            "realized": self.realized,
            "tolerance": self.tolerance,
            "dropped": self.dropped,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Flags:
    data_drift: bool = False
    prediction_drift: bool = False
    model_drift: bool = False
    estimated_model_drift: bool = False

    def any(self) -> bool:
        return (
            self.data_drift
            or self.prediction_drift
            or self.model_drift
            or self.estimated_model_drift
        )

    def to_dict(self) -> dict[str, bool]:
        return {
            "data_drift": self.data_drift,
            "prediction_drift": self.prediction_drift,
            "model_drift": self.model_drift,
            "estimated_model_drift": self.estimated_model_drift,
        }


@dataclass(frozen=True, slots=True)
class Performance:
    labelled_rows: int
    min_labelled_rows: int
    tolerance: float
    """Classifiers: the largest allowed drop of accuracy or F1; regressors: the largest
    allowed relative rise of MAE or RMSE."""
    current: dict[str, float] | None = None
    """Classifiers: accuracy and f1_macro; regressors: mae, rmse and r2."""
    reference: dict[str, float] | None = None
    dropped: bool | None = None
    """None when there were too few labels to judge."""
    task: str = "classification"

    @property
    def evaluated(self) -> bool:
        return self.current is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "task": self.task,
            "labelled_rows": self.labelled_rows,
            "min_labelled_rows": self.min_labelled_rows,
            "tolerance": self.tolerance,
            "current": _metrics(self.current),
            "reference": _metrics(self.reference),
            "dropped": self.dropped,
        }


@dataclass(frozen=True, slots=True)
class SegmentResult:
    """One value of the segment key, analysed as a window of its own."""

    value: str
    rows: int
    status: Status
    flags: Flags
    drifted_share: float | None
    weighted_share: float | None
    drifted_features: list[str]
    estimated: dict[str, float] | None
    estimate_band: dict[str, list[float]] | None
    realized: dict[str, float] | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "rows": self.rows,
            "status": self.status.value,
            "flags": self.flags.to_dict(),
            "drifted_share": _num(self.drifted_share),
            "weighted_share": _num(self.weighted_share),
            "drifted_features": self.drifted_features,
            "estimated": self.estimated,
            "estimate_band": self.estimate_band,
            "realized": self.realized,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Segments:
    key: str
    min_rows: int
    segments: list[SegmentResult]
    """Worst first; segments under min_rows last, with status insufficient_data."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "min_rows": self.min_rows,
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclass(slots=True)
class Evidence:
    """The frames the numbers were computed from, kept for the Evidently HTML report."""

    current: pd.DataFrame
    reference: pd.DataFrame
    drift: dict[str, ColumnDrift]
    """Per feature: the method and threshold drift.html repeats."""
    categorical: list[str]
    """The features (and the prediction column, when it is a class) tested as categories."""
    prediction_column: str
    prediction: ColumnDrift | None
    drift_share: float
    labelled: pd.DataFrame | None = None
    validation: pd.DataFrame | None = None
    class_names: list[str] = field(default_factory=list)
    task: str = "classification"

    @property
    def features(self) -> list[str]:
        return list(self.drift)


@dataclass(slots=True)
class VersionResult:
    version: int
    status: Status
    rows: int
    sample_cap: int
    sampled_rows: int = 0
    reference_rows: int = 0
    flags: Flags = field(default_factory=Flags)
    drifted_share: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    features: dict[str, ColumnDrift] = field(default_factory=dict)
    skipped_features: dict[str, str] = field(default_factory=dict)
    unseen: dict[str, Unseen] = field(default_factory=dict)
    """Per categorical feature compared: its values not seen in training."""
    prediction_column: str | None = None
    prediction: ColumnDrift | None = None
    distribution: PredictionDistribution | None = None
    performance: Performance | None = None
    verdict: DatasetVerdict | None = None
    estimate: Estimate | None = None
    segments: Segments | None = None
    message: str = ""
    evidence: Evidence | None = field(default=None, repr=False)

    @property
    def weighted_share(self) -> float | None:
        return None if self.verdict is None else self.verdict.weighted_share

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status.value,
            "message": self.message,
            "rows": self.rows,
            "sampled_rows": self.sampled_rows,
            "sample_cap": self.sample_cap,
            "reference_rows": self.reference_rows,
            "flags": self.flags.to_dict(),
            "drifted_share": _num(self.drifted_share),
            "drifted_features": self.drifted_features,
            "weighted_share": _num(self.weighted_share),
            "dataset_rule": None if self.verdict is None else self.verdict.to_dict(),
            "drifted_ranking": []
            if self.verdict is None
            else [r.to_dict() for r in self.verdict.ranking],
            "features": {name: self._feature(name, d) for name, d in self.features.items()},
            "skipped_features": self.skipped_features,
            "unseen_categories": {name: u.to_dict() for name, u in self.unseen.items()},
            "prediction": None
            if self.prediction is None
            else {"column": self.prediction_column, **self.prediction.to_dict()},
            "prediction_distribution": None
            if self.distribution is None
            else self.distribution.to_dict(),
            "performance": None if self.performance is None else self.performance.to_dict(),
            "estimated_performance": None if self.estimate is None else self.estimate.to_dict(),
            "segments": None if self.segments is None else self.segments.to_dict(),
        }

    def _feature(self, name: str, d: ColumnDrift) -> dict[str, Any]:
        weights = None if self.verdict is None else self.verdict.importance
        return {**d.to_dict(), "importance": None if weights is None else weights.get(name, 0.0)}


@dataclass(slots=True)
class DriftReport:
    run_id: str
    model: str
    since: datetime
    until: datetime
    started_at: datetime
    finished_at: datetime
    config: dict[str, Any]
    versions: list[VersionResult] = field(default_factory=list)
    rows: int = 0
    error: str | None = None
    note: str = ""
    engine: str = ""
    files: dict[str, str | None] = field(default_factory=dict)
    html_error: str | None = None
    directory: Path | None = None
    """Where drift.json and drift.html were written."""
    pushed: bool | None = None
    push_error: str | None = None

    @property
    def status(self) -> Status:
        if self.error is not None:
            return Status.ERROR
        return worst([v.status for v in self.versions])

    @property
    def flags(self) -> Flags:
        return Flags(
            data_drift=any(v.flags.data_drift for v in self.versions),
            prediction_drift=any(v.flags.prediction_drift for v in self.versions),
            model_drift=any(v.flags.model_drift for v in self.versions),
            estimated_model_drift=any(v.flags.estimated_model_drift for v in self.versions),
        )

    @property
    def message(self) -> str:
        if self.error is not None:
            return self.error
        if not self.versions:
            return self.note
        return "; ".join(f"v{v.version}: {v.message}" for v in self.versions if v.message)

    def to_dict(self) -> dict[str, Any]:
        shares = [v.drifted_share for v in self.versions if v.drifted_share is not None]
        weighted = [v.weighted_share for v in self.versions if v.weighted_share is not None]
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "model": self.model,
            "status": self.status.value,
            "message": self.message,
            "error": self.error,
            "window": {"since": self.since.isoformat(), "until": self.until.isoformat()},
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "rows": self.rows,
            "sampled_rows": sum(v.sampled_rows for v in self.versions),
            "sample_cap": self.config.get("max_rows"),
            "flags": self.flags.to_dict(),
            "drifted_share": max(shares) if shares else None,
            "weighted_share": max(weighted) if weighted else None,
            "served_versions": [v.version for v in self.versions],
            "versions": [v.to_dict() for v in self.versions],
            "config": self.config,
            "engine": self.engine,
            "files": self.files,
            "html_error": self.html_error,
            "pushgateway": {"pushed": self.pushed, "error": self.push_error},
        }
