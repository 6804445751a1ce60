"""Retention of drift report folders: ``<reports_dir>/<model>/<run_id>/`` by age and by count.

Applied after every drift run (for its model) and by ``vigil logs prune`` (for every model). The
run index keeps its entries (the verdict history stays readable); a pruned run's entry says so.
Folders outside the reports directory (``vigil drift run --out DIR``) are the user's and are never
touched, and the newest run of a model is always kept.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitoring.drift.index import RunIndex

_RUN_ID = re.compile(r"(\d{8}T\d{6})Z-[0-9a-f]{6}")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pruned:
    runs: int = 0
    bytes: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.runs + other.runs, self.bytes + other.bytes)


def _run_time(name: str) -> datetime | None:
    m = _RUN_ID.fullmatch(name)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune_model_reports(
    model_dir: Path, *, max_age: timedelta, max_runs: int, now: datetime | None = None
) -> Pruned:
    """Delete one model's run folders older than ``max_age`` or beyond the newest ``max_runs``."""
    now = now or datetime.now(UTC)
    # run ids have one-second resolution: runs within one second are ordered by folder mtime
    runs = sorted(
        (
            (t, p.stat().st_mtime_ns, p)
            for p in model_dir.iterdir()
            if p.is_dir() and (t := _run_time(p.name))
        ),
        reverse=True,
    )
    doomed = [
        p for i, (t, _, p) in enumerate(runs) if i > 0 and (i >= max_runs or now - t > max_age)
    ]
    if not doomed:
        return Pruned()
    freed = 0
    for path in doomed:
        freed += _size(path)
        shutil.rmtree(path)
    RunIndex(model_dir).mark_pruned({p.name for p in doomed}, at=now)
    log.info("pruned %d drift report folders of %s (%d bytes)", len(doomed), model_dir, freed)
    return Pruned(len(doomed), freed)


def prune_reports(
    reports_dir: Path, *, max_age: timedelta, max_runs: int, now: datetime | None = None
) -> Pruned:
    """:func:`prune_model_reports` for every model under ``reports_dir``."""
    total = Pruned()
    if not reports_dir.is_dir():
        return total
    for model_dir in sorted(p for p in reports_dir.iterdir() if p.is_dir()):
        total += prune_model_reports(model_dir, max_age=max_age, max_runs=max_runs, now=now)
    return total
