"""The index of drift runs per model: ``<reports_dir>/<model>/index.json``.

It decides the default window of the next run: from the end of the last *live* run (one whose
window ended "now") that analysed data. Runs that errored or had too few rows leave the window
open, so their rows are analysed together with the next ones. Back-fills (explicit ``--until``)
never move it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from model_store.store import write_atomic
from monitoring.drift.result import DriftReport, Status, VersionResult

INDEX_FILE = "index.json"
MAX_ENTRIES = 10_000  # a 15-minute schedule fills this in ~100 days; older entries are dropped
_ANALYSED = {Status.OK.value, Status.DRIFT.value}
log = logging.getLogger(__name__)


def new_run_id(started_at: datetime) -> str:
    return f"{started_at.strftime('%Y%m%dT%H%M%S')}Z-{secrets.token_hex(3)}"


def _metric(values: dict[str, float] | None, name: str) -> float | None:
    return None if values is None else values.get(name)


def _version_trend(v: VersionResult) -> dict[str, Any]:
    est, perf = v.estimate, v.performance
    return {
        "version": v.version,
        "status": v.status.value,
        "rows": v.rows,
        "rule": None if v.verdict is None else v.verdict.rule,
        "drifted_share": v.drifted_share,
        "weighted_share": v.weighted_share,
        "estimated_accuracy": _metric(None if est is None else est.estimated, "accuracy"),
        "estimated_f1_macro": _metric(None if est is None else est.estimated, "f1_macro"),
        "realized_accuracy": _metric(None if perf is None else perf.current, "accuracy"),
        "realized_f1_macro": _metric(None if perf is None else perf.current, "f1_macro"),
        "realized_mae": _metric(None if perf is None else perf.current, "mae"),
        "realized_rmse": _metric(None if perf is None else perf.current, "rmse"),
    }


def _worst(values: list[float | None], pick: Callable[[list[float]], float]) -> float | None:
    known = [x for x in values if x is not None and math.isfinite(x)]
    return pick(known) if known else None


def trend_fields(report: DriftReport) -> dict[str, Any]:
    """What ``vigil drift history`` shows of a run: per version, and the worst over versions
    (largest shares, lowest metrics) as drift.json does for ``drifted_share``."""
    per_version = [_version_trend(v) for v in report.versions]
    out: dict[str, Any] = {"version_trends": per_version}
    for key in ("drifted_share", "weighted_share", "realized_mae"):
        out[key] = _worst([t[key] for t in per_version], max)
    for key in ("estimated_accuracy", "realized_accuracy"):
        out[key] = _worst([t[key] for t in per_version], min)
    return out


class RunIndex:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / INDEX_FILE

    def runs(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        try:
            runs: list[dict[str, Any]] = json.loads(self.path.read_text())["runs"]
        except (ValueError, KeyError, TypeError) as exc:
            # a damaged index must not stop every later run: set it aside and start a new one
            aside = self.path.with_name(f"{INDEX_FILE}.corrupt-{secrets.token_hex(3)}")
            log.warning("drift run index %s is unreadable (%s); moved to %s", self.path, exc, aside)
            self.path.replace(aside)
            return []
        return runs

    def default_since(self) -> datetime | None:
        for run in reversed(self.runs()):
            if run.get("live") and run.get("status") in _ANALYSED:
                return datetime.fromisoformat(run["until"])
        return None

    def append(self, report: DriftReport, *, live: bool, path: Path) -> None:
        entry = {
            "run_id": report.run_id,
            "started_at": report.started_at.isoformat(),
            "finished_at": report.finished_at.isoformat(),
            "since": report.since.isoformat(),
            "until": report.until.isoformat(),
            "live": live,
            "status": report.status.value,
            "flags": report.flags.to_dict(),
            "rows": report.rows,
            "versions": [v.version for v in report.versions],
            "path": str(path),
            **trend_fields(report),
        }
        with self._locked():
            runs = [*self.runs(), entry][-MAX_ENTRIES:]
            self._write({"model": report.model, "runs": runs})

    def mark_pruned(self, run_ids: set[str], *, at: datetime) -> None:
        """Record that these runs' folders were deleted by retention (their verdicts stay)."""
        with self._locked():
            runs = self.runs()
            for run in runs:
                if run.get("run_id") in run_ids:
                    run["pruned_at"] = at.isoformat()
            if runs:
                self._write({"model": self.dir.name, "runs": runs})

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # two runs of the same model (a schedule and a manual run) must not lose each other's entry
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / ".index.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, data: dict[str, Any]) -> None:
        write_atomic(self.path, json.dumps(data, indent=2).encode())
