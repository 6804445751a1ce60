"""Back-tests started from the console: run in a thread, state in a JSON file per job.

The state lives in ``<data_dir>/console/backtests/<id>.json`` (replaced atomically), so the job's
page shows its progress from any worker process, and a finished result stays readable.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.store import write_atomic
from service.errors import NotFound, VigilError
from service.offline.backtest import backtest, summary_table
from service.settings import Settings

_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
PROGRESS_EVERY_S = 0.5
log = logging.getLogger(__name__)


def jobs_dir(settings: Settings) -> Path:
    return settings.data_dir / "console" / "backtests"


def _save(settings: Settings, job: dict[str, Any]) -> None:
    d = jobs_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / f"{job['id']}.json", json.dumps(job, default=str).encode())


def read_job(settings: Settings, job_id: str) -> dict[str, Any]:
    path = jobs_dir(settings) / f"{job_id}.json"
    if not _ID.fullmatch(job_id) or not path.is_file():
        raise NotFound(f"no back-test {job_id!r}")
    job: dict[str, Any] = json.loads(path.read_bytes())
    return job


def list_jobs(settings: Settings, model: str, limit: int = 20) -> list[dict[str, Any]]:
    d = jobs_dir(settings)
    if not d.is_dir():
        return []
    jobs = []
    for path in sorted(d.glob("*.json"), reverse=True):
        try:
            job = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if job.get("model") == model:
            jobs.append(job)
        if len(jobs) >= limit:
            break
    return jobs


def start_backtest(
    settings: Settings,
    model: str,
    candidate: int,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """Start ``vigil backtest``'s replay in a thread; returns the job id."""
    now = datetime.now(UTC)
    job: dict[str, Any] = {
        "id": f"{now:%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}",
        "model": model,
        "candidate": candidate,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "started_at": now.isoformat(),
        "finished_at": None,
        "state": "running",
        "rows_done": 0,
        "error": None,
        "headers": [],
        "rows": [],
        "summary": "",
    }
    _save(settings, job)
    last = [0.0]

    def progress(done: int, _total: int | None) -> None:
        job["rows_done"] = done
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            _save(settings, job)

    def work() -> None:
        try:
            report = backtest(settings, model, candidate, since, until, progress=progress)
            job["headers"], job["rows"] = summary_table(report)
            job["summary"] = f"replayed {report['rows']} rows of {model} on v{candidate}"
            job["rows_done"], job["state"] = report["rows"], "done"
        except VigilError as exc:
            job["state"], job["error"] = "failed", exc.message
        except Exception as exc:
            log.exception("back-test %s failed", job["id"])
            job["state"], job["error"] = "failed", f"{type(exc).__name__}: {exc}"
        job["finished_at"] = datetime.now(UTC).isoformat()
        _save(settings, job)

    threading.Thread(target=work, name=f"vigil-backtest-{job['id']}", daemon=True).start()
    return str(job["id"])
