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
log = logging.getLogger(__name__)


@dataclass(slots=True)
class DriftView:
    runs: list[dict[str, Any]]
    """Oldest first, as ``vigil drift history --json`` gives them, plus ``prediction_score``,
    ``has_html`` and ``has_json``."""
    features: list[str] = field(default_factory=list)
    heat_runs: list[str] = field(default_factory=list)
    heat: list[list[float | None]] = field(default_factory=list)
    """Per feature, per run of ``heat_runs``: the drift score (worst over versions)."""


def _run_dir(settings: Settings, model: str, run: dict[str, Any]) -> Path:
    return Path(run.get("path") or settings.reports_dir / model / str(run["run_id"]))


def _scores(report: dict[str, Any]) -> tuple[dict[str, float], float | None]:
    """Per feature the largest score over versions, and the largest prediction score."""
    features: dict[str, float] = {}
    prediction: float | None = None
    for v in report.get("versions", []):
        for name, d in (v.get("features") or {}).items():
            if d.get("score") is not None:
                features[name] = max(features.get(name, d["score"]), d["score"])
        pred = v.get("prediction") or {}
        if pred.get("score") is not None:
            prediction = max(prediction or pred["score"], pred["score"])
    return features, prediction


def drift_view(settings: Settings, model: str) -> DriftView:
    rows = history(settings.reports_dir, model)[-CHART_RUNS:]
    paths = {r["run_id"]: _run_dir(settings, model, r) for r in _index(settings, model)}
    per_run: dict[str, dict[str, float]] = {}
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
        per_run[row["run_id"]], row["prediction_score"] = _scores(report)
    features = sorted({f for scores in per_run.values() for f in scores})
    heat_runs = list(per_run)
    heat = [[per_run[r].get(f) for r in heat_runs] for f in features]
    return DriftView(rows, features, heat_runs, heat)


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
