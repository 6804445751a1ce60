"""Drift runs of a model for the console: the run index, and per-feature scores from drift.json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.drift.history import history
from monitoring.drift.index import RunIndex
from monitoring.drift.job import HTML_FILE, JSON_FILE
from service.errors import NotFound
from service.settings import Settings

HEATMAP_RUNS = 30  # drift.json files read per page: the newest runs
CHART_RUNS = 500
MAX_STRENGTH = 10.0
log = logging.getLogger(__name__)


@dataclass(slots=True)
class DriftView:
    runs: list[dict[str, Any]]
    """Oldest first, as ``vigil drift history --json`` gives them, plus ``prediction_score``,
    ``has_html`` and ``has_json``."""
    features: list[str] = field(default_factory=list)
    heat_runs: list[str] = field(default_factory=list)
    heat: list[list[float | None]] = field(default_factory=list)
    """Per feature, per run of ``heat_runs``: its :func:`strength`, the worst over versions."""
    heat_text: list[list[str]] = field(default_factory=list)


def _run_dir(settings: Settings, model: str, run: dict[str, Any]) -> Path:
    return Path(run.get("path") or settings.reports_dir / model / str(run["run_id"]))


def strength(score: float, threshold: float, drifted: bool) -> float | None:
    """A feature's score against its threshold, oriented so that ≥ 1 means drifted.

    Evidently's scores point two ways: a p-value (KS, chi-square) drifts *below* its
    threshold, a distance (Wasserstein, Jensen-Shannon) *above*. The verdict tells which: a
    p-value is the kind whose verdict is "below the threshold". Capped at 10.
    """
    if score is None or threshold is None or threshold <= 0:
        return None
    p_value = (score < threshold) == drifted
    ratio = threshold / max(score, 1e-12) if p_value else score / threshold
    return min(ratio, MAX_STRENGTH)


def _scores(report: dict[str, Any]) -> tuple[dict[str, tuple[float, str]], float | None]:
    """Per feature the largest strength over versions (with its text for hovering), and the
    largest prediction drift score."""
    features: dict[str, tuple[float, str]] = {}
    prediction: float | None = None
    for v in report.get("versions", []):
        for name, d in (v.get("features") or {}).items():
            value = strength(d.get("score"), d.get("threshold"), bool(d.get("drifted")))
            if value is not None and value >= features.get(name, (-1.0, ""))[0]:
                text = (
                    f"v{v.get('version')}: {d.get('method')} {d['score']:.3g} "
                    f"(threshold {d['threshold']})"
                )
                features[name] = (value, text)
        pred = v.get("prediction") or {}
        if pred.get("score") is not None:
            prediction = max(prediction or pred["score"], pred["score"])
    return features, prediction


def drift_view(settings: Settings, model: str) -> DriftView:
    rows = history(settings.reports_dir, model)[-CHART_RUNS:]
    paths = {r["run_id"]: _run_dir(settings, model, r) for r in _index(settings, model)}
    per_run: dict[str, dict[str, tuple[float, str]]] = {}
    for row in rows:
        folder = paths.get(row["run_id"])
        row["has_html"] = folder is not None and (folder / HTML_FILE).is_file()
        row["has_json"] = folder is not None and (folder / JSON_FILE).is_file()
        row["prediction_score"] = None
    for row in rows[-HEATMAP_RUNS:]:
        if not row["has_json"]:
            continue
        try:
            report = json.loads((paths[row["run_id"]] / JSON_FILE).read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("drift report of run %s is unreadable: %s", row["run_id"], exc)
            continue
        scores, row["prediction_score"] = _scores(report)
        if scores:  # a run without analysis has no column
            per_run[row["run_id"]] = scores
    features = sorted({f for scores in per_run.values() for f in scores})
    heat_runs = list(per_run)
    cells = [[per_run[r].get(f) for r in heat_runs] for f in features]
    heat = [[None if c is None else c[0] for c in row] for row in cells]
    text = [["" if c is None else c[1] for c in row] for row in cells]
    return DriftView(rows, features, heat_runs, heat, text)


def _index(settings: Settings, model: str) -> list[dict[str, Any]]:
    return RunIndex(settings.reports_dir / model).runs()


def latest_run(settings: Settings, model: str) -> dict[str, Any] | None:
    runs = history(settings.reports_dir, model)
    return runs[-1] if runs else None


def report_file(settings: Settings, model: str, run_id: str, name: str) -> Path:
    """drift.html or drift.json of a run named in the index (never a path built from input)."""
    if name not in (HTML_FILE, JSON_FILE):
        raise NotFound(f"file: a drift run has {HTML_FILE} and {JSON_FILE}, not {name!r}")
    for run in _index(settings, model):
        if run.get("run_id") == run_id:
            path = _run_dir(settings, model, run) / name
            if not path.is_file():
                raise NotFound(f"run {run_id} of {model} has no {name} (pruned or not written)")
            return path
    raise NotFound(f"model {model!r} has no drift run {run_id!r}")
