"""Drift gauges to the Prometheus Pushgateway (job ``vigil_drift``, grouping key ``model``).

Each push replaces the model's whole group, so versions no longer served disappear.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from monitoring.drift.result import DriftReport, Status, VersionResult

JOB = "vigil_drift"


def drift_registry(report: DriftReport) -> CollectorRegistry:
    reg = CollectorRegistry()
    m = report.model

    def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
        return Gauge(name, doc, labels, registry=reg)

    gauge(
        "vigil_drift_last_run_timestamp_seconds", "When the drift job last finished.", ["model"]
    ).labels(m).set(report.finished_at.timestamp())
    status = gauge(
        "vigil_drift_status", "1 for the status of the last drift run.", ["model", "status"]
    )
    for s in Status:
        status.labels(m, s.value).set(1 if s is report.status else 0)

    mv = ["model", "version"]
    rows = gauge("vigil_drift_rows", "Logged rows in the window.", mv)
    dataset = gauge("vigil_drift_dataset_drift", "1 when the dataset drifted.", mv)
    share = gauge("vigil_drift_drifted_share", "Share of features that drifted.", mv)
    f_labels = [*mv, "feature"]
    f_score = gauge("vigil_drift_feature_score", "Drift score per feature.", f_labels)
    f_drifted = gauge("vigil_drift_feature_drifted", "1 when the feature drifted.", f_labels)
    p_drift = gauge("vigil_drift_prediction_drift", "1 when the prediction drifted.", mv)
    p_score = gauge("vigil_drift_prediction_score", "Drift score of the prediction.", mv)
    model_drift = gauge("vigil_drift_model_drift", "1 when quality dropped.", mv)
    perf = gauge(
        "vigil_drift_performance",
        "Quality on labelled rows: accuracy and f1_macro of classifiers, mae, rmse and r2 of "
        "regressors.",
        [*mv, "metric"],
    )
    ref_perf = gauge(
        "vigil_drift_reference_performance", "Quality on validation rows.", [*mv, "metric"]
    )
    labelled = gauge("vigil_drift_labelled_rows", "Rows with feedback labels.", mv)
    weighted = gauge(
        "vigil_drift_weighted_share", "Importance-weighted share of drifted features.", mv
    )
    estimated = _EstimateGauges(gauge, mv)
    unseen = gauge(
        "vigil_drift_feature_unseen_share",
        "Share of a categorical feature's values in the window that training never saw.",
        f_labels,
    )
    distribution = _DistributionGauges(gauge, mv)

    for v in report.versions:
        ver = str(v.version)
        rows.labels(m, ver).set(v.rows)
        dataset.labels(m, ver).set(int(v.flags.data_drift))
        p_drift.labels(m, ver).set(int(v.flags.prediction_drift))
        model_drift.labels(m, ver).set(int(v.flags.model_drift))
        if v.drifted_share is not None:
            share.labels(m, ver).set(v.drifted_share)
        if v.weighted_share is not None:
            weighted.labels(m, ver).set(v.weighted_share)
        estimated.set(m, v)
        for feature, d in v.features.items():
            f_score.labels(m, ver, feature).set(d.score)
            f_drifted.labels(m, ver, feature).set(int(d.drifted))
        if v.prediction is not None:
            p_score.labels(m, ver).set(v.prediction.score)
        for feature, u in v.unseen.items():
            unseen.labels(m, ver, feature).set(u.share)
        distribution.set(m, v)
        if v.performance is not None:
            labelled.labels(m, ver).set(v.performance.labelled_rows)
            for metric, value in (v.performance.current or {}).items():
                perf.labels(m, ver, metric).set(value)
            for metric, value in (v.performance.reference or {}).items():
                ref_perf.labels(m, ver, metric).set(value)
    return reg


class _DistributionGauges:
    """What the model answered in the window and on its reference: a regressor's quantiles of
    the predicted value, a classifier's share of each class (labels bounded by the quantiles and
    the model's classes)."""

    def __init__(self, gauge: Callable[[str, str, list[str]], Gauge], mv: list[str]) -> None:
        self.quantile = gauge(
            "vigil_drift_prediction_quantile",
            "Quantile of a regressor's predicted value, in the window (sample=current) and on the "
            "reference (sample=reference).",
            [*mv, "quantile", "sample"],
        )
        self.share = gauge(
            "vigil_drift_prediction_class_share",
            "Share of rows a classifier assigned to each class, in the window (sample=current) "
            "and on the reference (sample=reference).",
            [*mv, "class", "sample"],
        )

    def set(self, model: str, v: VersionResult) -> None:
        d, ver = v.distribution, str(v.version)
        if d is None:
            return
        target = self.quantile if d.kind == "quantiles" else self.share
        for sample, values in (("current", d.current), ("reference", d.reference)):
            for key, value in values.items():
                target.labels(model, ver, key, sample).set(value)


class _EstimateGauges:
    """CBPE: the estimate, its band, its baseline and the flag, per model and version."""

    def __init__(self, gauge: Callable[[str, str, list[str]], Gauge], mv: list[str]) -> None:
        mm = [*mv, "metric"]
        self.flag = gauge(
            "vigil_drift_estimated_model_drift",
            "1 when quality estimated without labels (CBPE) dropped beyond the tolerance.",
            mv,
        )
        self.value = gauge(
            "vigil_drift_estimated_performance", "Quality estimated without labels (CBPE).", mm
        )
        self.band = gauge(
            "vigil_drift_estimated_performance_band",
            "Bounds of the 95 % band of the CBPE estimate.",
            [*mm, "bound"],
        )
        self.reference = gauge(
            "vigil_drift_estimated_reference_performance",
            "CBPE estimate on the validation rows: the baseline of the drop.",
            mm,
        )

    def set(self, model: str, v: VersionResult) -> None:
        est, ver = v.estimate, str(v.version)
        if est is None or est.estimated is None:
            return
        self.flag.labels(model, ver).set(int(v.flags.estimated_model_drift))
        for metric, value in est.estimated.items():
            self.value.labels(model, ver, metric).set(value)
        for metric, (low, high) in (est.band or {}).items():
            self.band.labels(model, ver, metric, "low").set(low)
            self.band.labels(model, ver, metric, "high").set(high)
        for metric, value in (est.reference or {}).items():
            self.reference.labels(model, ver, metric).set(value)


def push(url: str, report: DriftReport, timeout: float = 10.0) -> None:
    push_to_gateway(
        url,
        job=JOB,
        registry=drift_registry(report),
        grouping_key={"model": report.model},
        timeout=timeout,
    )
