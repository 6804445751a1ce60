"""Retention for the Parquet log store: whole date partitions older than a cut-off go.

Deleting a partition directory is atomic enough for readers (a file is either listed or not) and
costs nothing per record; PostgreSQL's equivalent is ``PostgresStore.prune``.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED
from service.iolog.store import open_store
from service.settings import Settings

# Where date=<YYYY-MM-DD> partitions live, relative to the store root.
_PARTITION_PARENTS = (f"{PREDICTIONS}/model=*/version=*", REJECTED, f"{FEEDBACK}/model=*")


def _day(partition: Path) -> date | None:
    try:
        return date.fromisoformat(partition.name.split("=", 1)[1])
    except (IndexError, ValueError):
        return None  # not ours: leave it alone


def prune_store(settings: Settings, older_than: datetime) -> dict[str, int]:
    """Retention for whichever store ``VIGIL_LOG_STORE`` names; what was removed, by kind.

    PostgreSQL deletes rows received before ``older_than``; Parquet removes whole days before
    its date, so it keeps up to one day more than asked.
    """
    if older_than.tzinfo is None:
        older_than = older_than.replace(tzinfo=UTC)
    return open_store(settings).prune(older_than)


def prune_parquet(root: Path, older_than: date) -> int:
    """Remove every date partition before ``older_than``; returns how many were removed."""
    removed = 0
    for pattern in _PARTITION_PARENTS:
        for parent in sorted(Path(root).glob(pattern)):
            for partition in sorted(parent.glob("date=*")):
                day = _day(partition)
                if partition.is_dir() and day is not None and day < older_than:
                    shutil.rmtree(partition)
                    removed += 1
            _remove_empty(parent, Path(root))
    return removed


def _remove_empty(directory: Path, root: Path) -> None:
    """Drop model=/version= directories left empty, so listings do not show dead versions."""
    while directory != root and directory.is_relative_to(root):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or just written to by the compactor): keep it
        directory = directory.parent
