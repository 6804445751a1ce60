"""``vigil drift history``: one row per run from the run index, as a table or JSON, including
entries written before the trend fields existed; clear errors for unknown models and no runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from model_store.store import ModelStore
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse
from monitoring.drift.index import RunIndex
from monitoring.drift.result import DriftReport
from service.cli.main import app
from service.cli.monitoring import EXIT_NO_RUNS
from service.settings import Settings
from tests.conftest import MODEL
from tests.test_drift_core import window

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _record(settings: Settings, store: ModelStore, frame: pd.DataFrame, hour: int) -> DriftReport:
    """What run_drift records for a window, without the I/O log in between."""
    reference = pd.read_parquet(store.reference_path(MODEL, 1))
    result = analyse(frame, reference, store.manifest(MODEL, 1), DriftConfig())
    start = T0 + timedelta(hours=hour)
    report = DriftReport(
        run_id=f"run-{hour}",
        model=MODEL,
        since=start - timedelta(hours=1),
        until=start,
        started_at=start,
        finished_at=start,
        config={},
        versions=[result],
        rows=len(frame),
    )
    index = RunIndex(settings.reports_dir / MODEL)
    index.append(report, live=True, path=index.dir / report.run_id)
    return report


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {
        "VIGIL_MODEL_STORE": str(settings.model_store),
        "VIGIL_DATA_DIR": str(settings.data_dir),
    }


@pytest.fixture
def recorded(settings: Settings, store: ModelStore) -> list[DriftReport]:
    reference = pd.read_parquet(store.reference_path(MODEL, 1))
    # an entry from before the trend fields: it must still give a row
    old = {
        "run_id": "old-run",
        "started_at": (T0 - timedelta(hours=1)).isoformat(),
        "until": (T0 - timedelta(hours=1)).isoformat(),
        "live": True,
        "status": "ok",
        "flags": {"data_drift": False, "prediction_drift": False, "model_drift": False},
        "rows": 120,
        "versions": [1],
    }
    index = settings.reports_dir / MODEL / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"model": MODEL, "runs": [old]}))
    clean = _record(settings, store, window(reference, 300, seed=1), hour=0)
    shifted = window(reference, 300, seed=2)
    top = store.manifest(MODEL, 1).feature_importance.ranked()[0][0]  # type: ignore[union-attr]
    shifted[top] += 2 * reference[top].std()
    drifting = _record(settings, store, shifted, hour=1)
    return [clean, drifting]


def test_history_json_has_one_row_per_run_with_verdicts_and_metrics(
    env: dict[str, str], recorded: list[DriftReport]
) -> None:
    result = CliRunner().invoke(app, ["drift", "history", "--model", MODEL, "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["run_id"] for r in rows] == ["old-run", "run-0", "run-1"]
    old, clean, drifting = rows
    assert old["rows"] == 120 and old["weighted_share"] is None and old["rule"] is None
    for row, report in zip((clean, drifting), recorded, strict=True):
        (v,) = report.versions
        assert row["rows"] == 300 and row["status"] == report.status.value
        assert row["weighted_share"] == pytest.approx(v.weighted_share)
        assert v.estimate is not None and v.estimate.estimated is not None
        assert row["estimated_accuracy"] == pytest.approx(v.estimate.estimated["accuracy"])
        assert v.performance is not None and v.performance.current is not None
        assert row["realized_accuracy"] == pytest.approx(v.performance.current["accuracy"])
        assert row["rule"] == "importance"
    assert clean["flags"] == [] and "data_drift" in drifting["flags"]
    assert drifting["weighted_share"] > clean["weighted_share"]


def test_history_table_is_the_default(env: dict[str, str], recorded: list[DriftReport]) -> None:
    result = CliRunner().invoke(app, ["drift", "history", "--model", MODEL], env=env)
    assert result.exit_code == 0, result.output
    assert "drift history of breast-cancer" in result.stdout
    assert "data_drift" in result.stdout and "importance" in result.stdout
    (v,) = recorded[1].versions
    assert f"{v.weighted_share:.3f}" in result.stdout
    assert "breast-cancer: 3 runs from" in result.output and "1 with drift" in result.output


def test_history_of_unknown_model_or_no_runs_says_so(env: dict[str, str], tmp_path: Path) -> None:
    unknown = CliRunner().invoke(app, ["drift", "history", "--model", "nope"], env=env)
    assert unknown.exit_code == 1 and "not in the store" in unknown.output
    bad = CliRunner().invoke(app, ["drift", "history", "--model", "../etc"], env=env)
    assert bad.exit_code == 1 and "error" in bad.output
    none = CliRunner().invoke(app, ["drift", "history", "--model", MODEL], env=env)
    assert none.exit_code == EXIT_NO_RUNS and "no drift runs yet" in none.output
