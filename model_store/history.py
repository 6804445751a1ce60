"""The append-only audit trail of what a model serves: ``<store>/<model>/history.jsonl``.

One JSON object per line, appended with a single ``write`` under the model lock and fsynced, so
entries never interleave and an acknowledged change survives a crash. A line torn by a crash
mid-write is skipped when reading, never repaired in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HISTORY_FILE = "history.jsonl"
WHO_CLI = "cli"
WHO_AUTO = "auto"

log = logging.getLogger("vigil.model_store")


class Action(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    ROLLOUT_START = "rollout_start"
    ROLLOUT_STEP = "rollout_step"
    ROLLOUT_PROMOTE = "rollout_promote"
    ROLLOUT_ABORT = "rollout_abort"


class HistoryEntry(BaseModel):
    """One change of what is served, or of how a rollout serves it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    at: datetime = Field(description="When, in UTC.")
    who: str = Field(description="The admin name (VIGIL_ADMIN_NAME), `cli` or `auto`.")
    action: Action
    alias: str = Field(description="The alias concerned, usually `production`.")
    from_version: int | None = Field(description="Version served (or primary) before.")
    to_version: int | None = Field(description="Version served (or candidate) after.")
    reason: str | None = Field(None, description="Free text given by whoever made the change.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Action specifics: rollout mode, percent, sample."
    )
    gates: list[dict[str, Any]] | None = Field(
        None, description="Gate results behind an automatic step, promote or abort."
    )


def now_utc() -> datetime:
    return datetime.now(UTC)


def append_entry(model_dir: Path, entry: HistoryEntry) -> None:
    """Append and fsync one line; the caller holds the model lock. Raises OSError."""
    line = (entry.model_dump_json() + "\n").encode()
    fd = os.open(model_dir / HISTORY_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a crash tore the last line: start ours on a line of its own
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk
                raise OSError(f"short write to {HISTORY_FILE} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError:
            # The caller undoes the change, so its entry must go too (and no half line stays).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def read_entries(model_dir: Path, limit: int | None = None) -> list[HistoryEntry]:
    """Entries oldest first; with ``limit``, the newest ``limit`` of them."""
    path = model_dir / HISTORY_FILE
    if not path.is_file():
        return []
    entries: list[HistoryEntry] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(HistoryEntry.model_validate_json(line))
        except ValidationError:
            log.warning("%s line %d is unreadable (torn by a crash?); skipped", path, number)
    if limit is None:
        return entries
    return entries[max(len(entries) - limit, 0) :]
