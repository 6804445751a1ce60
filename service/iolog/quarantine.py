"""Segments the deliverer gave up on: ``<spool>/quarantine/<segment>.seg`` + ``<segment>.json``.

A segment lands here after ``VIGIL_DELIVERY_MAX_ATTEMPTS`` failures that were its own fault (see
deliver.py for the rule), so it no longer holds back the segments after it. The sidecar says why
and how often it failed. Nothing here is read by the readers or delivered again until an operator
runs ``vigil logs quarantine retry`` (once the cause is fixed).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.iolog.frames import read_frames

QUARANTINE_DIR = "quarantine"
SEGMENT_SUFFIX = ".seg"
SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True, slots=True)
class Quarantined:
    segment: str  # the segment id the store knows it by: <worker dir>-<seg-N>
    reason: str
    attempts: int
    size: int
    records: int | None  # None when its frames cannot even be read
    quarantined_at: str
    origin: str


def quarantine_dir(spool_root: Path) -> Path:
    return spool_root / QUARANTINE_DIR


def count_records(path: Path) -> int | None:
    """Rows in a segment (predictions rows, rejected requests, feedback items)."""
    try:
        n = 0
        for f in read_frames(path):
            h = f.header
            n += h["n"] if h["t"] == "p" else len(h["items"]) if h["t"] == "f" else 1
        return n
    except Exception:  # a segment here may be unreadable: that can be why it is here
        return None


def put(spool_root: Path, segment: Path, segment_id: str, reason: str, attempts: int) -> Path:
    """Move ``segment`` into quarantine with its sidecar; returns its new path."""
    qdir = quarantine_dir(spool_root)
    qdir.mkdir(exist_ok=True)
    dest = qdir / f"{segment_id}{SEGMENT_SUFFIX}"
    entry = Quarantined(
        segment_id, reason, attempts, segment.stat().st_size, count_records(segment),
        datetime.now(UTC).isoformat(timespec="seconds"), str(segment),
    )  # fmt: skip
    _write_sidecar(dest, entry)  # first: a segment in quarantine always says why
    os.rename(segment, dest)
    return dest


def _write_sidecar(dest: Path, entry: Quarantined) -> None:
    sidecar = dest.with_suffix(SIDECAR_SUFFIX)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(asdict(entry), indent=2))
    os.replace(tmp, sidecar)


def listing(spool_root: Path) -> list[tuple[Path, Quarantined]]:
    """Every quarantined segment with its sidecar, oldest segment id first."""
    qdir = quarantine_dir(spool_root)
    if not qdir.is_dir():
        return []
    out = []
    for seg in sorted(qdir.glob(f"*{SEGMENT_SUFFIX}")):
        try:
            entry = Quarantined(**json.loads(seg.with_suffix(SIDECAR_SUFFIX).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            entry = Quarantined(
                seg.stem, f"sidecar unreadable: {exc}", 0, seg.stat().st_size,
                count_records(seg), "", "",
            )  # fmt: skip
        out.append((seg, entry))
    return out


def count(spool_root: Path) -> int:
    qdir = quarantine_dir(spool_root)
    return len(list(qdir.glob(f"*{SEGMENT_SUFFIX}"))) if qdir.is_dir() else 0


def release(seg: Path) -> None:
    """Forget a quarantined segment once it has been delivered."""
    seg.unlink()
    with contextlib.suppress(FileNotFoundError):
        seg.with_suffix(SIDECAR_SUFFIX).unlink()


def failed_again(seg: Path, entry: Quarantined, reason: str) -> Quarantined:
    """Record a failed retry in the sidecar."""
    again = Quarantined(
        entry.segment, reason, entry.attempts + 1, entry.size, entry.records,
        entry.quarantined_at, entry.origin,
    )  # fmt: skip
    _write_sidecar(seg, again)
    return again
