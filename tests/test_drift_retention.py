"""Drift report folders are pruned by age and count, by the drift job and by `vigil logs prune`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

from monitoring.drift.job import run_drift
from monitoring.drift.retention import prune_model_reports
from service.cli.main import app
from service.settings import Settings
from tests.conftest import MODEL

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _run_dir(model_dir: Path, age: timedelta, suffix: str = "abcdef") -> Path:
    path = model_dir / f"{(NOW - age):%Y%m%dT%H%M%S}Z-{suffix}"
    path.mkdir(parents=True)
    (path / "drift.json").write_text("{}")
    (path / "drift.html").write_bytes(b"x" * 1000)
    return path


def test_folders_beyond_age_or_count_go_newest_and_user_folders_stay(tmp_path: Path) -> None:
    model_dir = tmp_path / MODEL
    runs = [_run_dir(model_dir, timedelta(days=d)) for d in (0, 1, 2, 40, 41)]
    user = model_dir / "my-backfill"  # `vigil drift run --out` into the reports folder
    user.mkdir()
    pruned = prune_model_reports(model_dir, max_age=timedelta(days=30), max_runs=2, now=NOW)
    assert pruned.runs == 3 and pruned.bytes == 3 * 1002
    assert [p.exists() for p in runs] == [True, True, False, False, False]
    assert user.is_dir()


def test_the_newest_run_is_kept_however_old(tmp_path: Path) -> None:
    only = _run_dir(tmp_path / MODEL, timedelta(days=400))
    assert (
        prune_model_reports(tmp_path / MODEL, max_age=timedelta(days=1), max_runs=1, now=NOW).runs
        == 0
    )
    assert only.is_dir()


def test_drift_job_applies_retention_and_the_index_keeps_the_verdicts(settings: Settings) -> None:
    settings = settings.model_copy(update={"drift_reports_max_runs": 2})
    reports = [run_drift(settings, MODEL) for _ in range(3)]
    model_dir = settings.reports_dir / MODEL
    kept = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    assert kept == sorted(r.run_id for r in reports[1:])
    index = json.loads((model_dir / "index.json").read_text())["runs"]
    assert [r["run_id"] for r in index] == [r.run_id for r in reports]
    assert "pruned_at" in index[0] and "pruned_at" not in index[1]


def test_logs_prune_prunes_reports_with_the_configured_age(settings: Settings) -> None:
    model_dir = settings.reports_dir / MODEL
    old = [_run_dir(model_dir, timedelta(days=d), f"{d:06x}") for d in (3, 2)]
    newest = _run_dir(model_dir, timedelta(days=0), "ffffff")
    env = {
        "VIGIL_MODEL_STORE": str(settings.model_store),
        "VIGIL_DATA_DIR": str(settings.data_dir),
        "VIGIL_DRIFT_REPORTS_MAX_AGE": "1d",
    }
    result = CliRunner().invoke(app, ["logs", "prune", "--older-than", "30d"], env=env)
    assert result.exit_code == 0, result.output
    assert "pruned 2 drift report folders" in result.output
    assert not any(p.exists() for p in old) and newest.is_dir()


def test_a_bad_retention_setting_is_refused_with_the_grammar() -> None:
    with pytest.raises(pydantic.ValidationError, match="not a duration like"):
        Settings(drift_reports_max_age="a month")
