"""``vigil drift history``: one row per drift run of a model, from its run index.

Entries written before the trend fields existed still give a row; what they lack is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitoring.drift.index import RunIndex

COLUMNS = (
    "run_id",
    "started_at",
    "since",
    "until",
    "rows",
    "status",
    "flags",
    "rule",
    "drifted_share",
    "weighted_share",
    "estimated_accuracy",
    "realized_accuracy",
    "realized_mae",
    "live",
)


def _row(run: dict[str, Any]) -> dict[str, Any]:
    flags = run.get("flags") or {}
    rules = sorted({t["rule"] for t in run.get("version_trends", []) if t.get("rule")})
    row = {key: run.get(key) for key in COLUMNS}
    row["flags"] = [name for name, on in flags.items() if on]
    row["rule"] = ",".join(rules) or None
    row["versions"] = run.get("version_trends") or [{"version": v} for v in run.get("versions", [])]
    return row


def history(reports_dir: Path, model: str) -> list[dict[str, Any]]:
    """The model's runs, oldest first (the order they were recorded in)."""
    return [_row(run) for run in RunIndex(reports_dir / model).runs()]
