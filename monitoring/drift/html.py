"""drift.html: Evidently reports (DataDriftPreset, ValueDrift, ClassificationPreset or
RegressionPreset) per version, combined into one page and written with Evidently's
``Snapshot.save_html``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Regression,
    Report,
)
from evidently.core.report import Snapshot
from evidently.legacy.renderers.html_widgets import CounterData, counter, header_text
from evidently.metrics import ValueDrift
from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

from model_store.log_columns import LABEL_COLUMN, PREDICTION_COLUMN, proba_column
from monitoring.drift.result import DriftReport, Evidence, VersionResult


def drift_snapshot(evidence: Evidence) -> Snapshot:
    """Data drift of the features and drift of the watched prediction, as Evidently shows it:
    the column mapping says which columns are categorical, and each column gets the method and
    threshold drift.json used for it."""
    features = evidence.features
    columns = [*features, evidence.prediction_column]
    categorical = [c for c in columns if c in evidence.categorical]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in evidence.categorical],
        categorical_columns=categorical,
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=features,
            per_column_method={f: d.method for f, d in evidence.drift.items()},
            per_column_threshold={f: d.threshold for f, d in evidence.drift.items()},
            drift_share=evidence.drift_share,
        )
    ]
    if evidence.prediction is not None:
        metrics.append(
            ValueDrift(
                column=evidence.prediction_column,
                method=evidence.prediction.method,
                threshold=evidence.prediction.threshold,
            )
        )
    report = Report(metrics, include_tests=True)
    return report.run(
        Dataset.from_pandas(_typed(evidence.current[columns], categorical), definition),
        Dataset.from_pandas(_typed(evidence.reference[columns], categorical), definition),
    )


def _typed(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Categories as text, as drift.json compared them (a null stays null)."""
    if not categorical:
        return frame
    return frame.assign(
        **{c: frame[c].map(lambda v: v if pd.isna(v) else str(v)) for c in categorical}
    )


def quality_snapshot(evidence: Evidence) -> Snapshot | None:
    """Quality on the labelled rows of the window vs the reference's validation rows."""
    if evidence.labelled is None or evidence.validation is None:
        return None
    if evidence.task == "regression":
        definition = DataDefinition(
            numerical_columns=[LABEL_COLUMN, PREDICTION_COLUMN],
            regression=[Regression(target=LABEL_COLUMN, prediction=PREDICTION_COLUMN)],
        )
        return Report([RegressionPreset()]).run(
            Dataset.from_pandas(evidence.labelled, data_definition=definition),
            Dataset.from_pandas(evidence.validation, data_definition=definition),
        )
    names = evidence.class_names
    task: BinaryClassification | MulticlassClassification
    if len(names) == 2:
        task = BinaryClassification(
            target=LABEL_COLUMN,
            prediction_labels=PREDICTION_COLUMN,
            prediction_probas=proba_column(names[1]),
            pos_label=names[1],
        )
    else:
        task = MulticlassClassification(target=LABEL_COLUMN, prediction_labels=PREDICTION_COLUMN)
    probas = [c for c in evidence.labelled.columns if c.startswith("proba_")]
    definition = DataDefinition(
        categorical_columns=[LABEL_COLUMN, PREDICTION_COLUMN],
        numerical_columns=probas,
        classification=[task],
    )
    return Report([ClassificationPreset()]).run(
        Dataset.from_pandas(evidence.labelled, data_definition=definition),
        Dataset.from_pandas(evidence.validation, data_definition=definition),
    )


def _widget(info: Any) -> dict[str, Any]:
    data: dict[str, Any] = info.dict()
    return data


def _summary(report: DriftReport) -> list[dict[str, Any]]:
    counters = [
        CounterData(label="status", value=report.status.value),
        CounterData(label="rows", value=str(report.rows)),
        CounterData(label="since", value=report.since.isoformat(timespec="seconds")),
        CounterData(label="until", value=report.until.isoformat(timespec="seconds")),
    ]
    title = f"Vigil drift report: {report.model}, run {report.run_id}"
    widgets = [_widget(counter(counters=counters, title=title))]
    if report.message:
        widgets.append(_widget(header_text(label=report.message)))
    return widgets


def _version_widgets(model: str, result: VersionResult) -> list[dict[str, Any]]:
    heading = f"{model} v{result.version}: {result.status.value} ({result.message})"
    widgets = [_widget(header_text(label=heading))]
    widgets.extend(_widget(header_text(label=line)) for line in vigil_lines(result))
    if result.evidence is None:
        return widgets
    sections = [("data and prediction drift", drift_snapshot(result.evidence))]
    quality = quality_snapshot(result.evidence)
    if quality is not None:
        assert result.evidence.labelled is not None
        shown = len(result.evidence.labelled)
        of = result.performance.labelled_rows if result.performance else shown
        rows = f"{shown:,} labelled rows" + (f" (a sample of {of:,})" if of > shown else "")
        kind = "regression" if result.evidence.task == "regression" else "classification"
        sections.append((f"{kind} quality on {rows} vs validation", quality))
    for title, snap in sections:
        dumped = snap.dump_dict()
        widgets.append(_widget(header_text(label=f"v{result.version}: {title}")))
        widgets.extend(dumped["widgets"])
        widgets.extend(dumped["tests_widgets"])
    return widgets


def vigil_lines(result: VersionResult) -> list[str]:
    """Vigil's own verdicts, which Evidently's presets below do not know: the rule that decided
    dataset drift, the drifted features by importance times score, and the CBPE estimate."""
    lines: list[str] = []
    v = result.verdict
    if v is not None:
        weighted = "" if v.weighted_share is None else f", weighted share {v.weighted_share:.3f}"
        lines.append(
            f"dataset rule {v.rule}: share {v.share:.3f}{weighted}, threshold {v.threshold}"
            f" → {'data drift' if v.drifted else 'no data drift'}"
            + (f" ({v.note})" if v.note else "")
        )
        for i, r in enumerate(v.ranking[:10], start=1):
            imp = "n/a" if r.importance is None else f"{r.importance:.3f}"
            lines.append(
                f"#{i} {r.feature}: importance {imp}, score {r.score:.3f}, impact {r.impact:.4f}"
            )
    e = result.estimate
    if e is not None and e.estimated is not None and e.band is not None:
        low, high = e.band["accuracy"]
        ref = "" if e.reference is None else f" vs {e.reference['accuracy']:.3f} on validation"
        real = "" if e.realized is None else f"; realized {e.realized['accuracy']:.3f}"
        lines.append(
            f"estimated accuracy (CBPE) {e.estimated['accuracy']:.3f} "
            f"[{low:.3f}, {high:.3f}]{ref}{real}"
            + (" → estimated model drift" if e.dropped else "")
        )
    elif e is not None and e.note:
        lines.append(f"no performance estimate: {e.note}")
    for name, u in result.unseen.items():
        if u.rows:
            shown = ", ".join(f"{value!r}: {n}" for value, n in u.values.items())
            lines.append(f"{name}: {u.share:.1%} of the values unseen in training ({shown})")
    p = result.performance
    if p is not None and p.task == "regression" and p.current is not None:
        baseline = p.reference or {}
        lines.append(
            "regression quality on feedback: "
            + ", ".join(
                f"{m.upper()} {p.current[m]:.3f}"
                + (f" (validation {baseline[m]:.3f})" if m in baseline else "")
                for m in p.current
            )
            + (" → model drift" if p.dropped else "")
        )
    if result.segments is not None:
        for seg in result.segments.segments:
            lines.append(
                f"segment {result.segments.key}={seg.value}: {seg.status.value}; {seg.message}"
            )
    return lines


def combined_snapshot(report: DriftReport) -> Snapshot:
    """One Evidently snapshot holding the summary and every version's reports, in order."""
    widgets = _summary(report)
    for result in report.versions:
        widgets.extend(_version_widgets(report.model, result))
    return Snapshot.load_dict(
        {
            "report": {"items": []},
            "name": f"{report.model} {report.run_id}",
            "timestamp": datetime.now(UTC),
            "metadata": {},
            "tags": [],
            "metric_results": {},
            "top_level_metrics": [],
            "widgets": widgets,
            "tests_widgets": [],
        }
    )


def write_html(report: DriftReport, path: Path) -> None:
    combined_snapshot(report).save_html(str(path))
