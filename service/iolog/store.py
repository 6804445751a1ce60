"""The one log-store protocol, and ``open_store(settings)``: the one place that turns
``VIGIL_LOG_STORE`` into a store object."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from service.iolog.frames import Frame
from service.iolog.parquet_store import ParquetStore
from service.iolog.schema import BatchSource
from service.settings import Settings

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class LogStore(Protocol):
    # Errors meaning the store refuses a value: the segment's fault, not the store's (quarantine).
    content_errors: tuple[type[Exception], ...]

    def ping(self) -> bool:
        """Whether the store is up and writable now."""
        ...

    def deliver(self, frames: list[Frame], segment_id: str) -> dict[str, int]:
        """Store a spool segment's frames; delivering the same segment again adds nothing."""
        ...

    def prune(self, older_than: datetime) -> dict[str, int]: ...

    def prediction_batches(
        self,
        model: str,
        version: int | None,
        since: datetime | None,
        until: datetime | None,
        columns: list[str] | None = None,
        batch_rows: int = 65_536,
    ) -> list[BatchSource]:
        """The stored window, streamed: sources whose batches carry ``model`` and ``version``."""
        ...

    def feedback_batches(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Labels of ``model``: at least those of rows logged in the window."""
        ...

    def rejected_rows(self, since: datetime | None, until: datetime | None) -> pa.Table: ...


def is_postgres(settings: Settings) -> bool:
    return settings.log_store_url.startswith(POSTGRES_SCHEMES)


def open_store(settings: Settings) -> LogStore:
    """The backend ``VIGIL_LOG_STORE`` names: a PostgreSQL URL, an s3:// URL, or else a Parquet
    directory."""
    if settings.log_store_url.startswith("s3://"):
        from service.iolog.s3_store import open_s3_store  # pyarrow's S3 is started only if used

        return open_s3_store(settings)
    if is_postgres(settings):
        # Imported here: psycopg is only needed (and only paid for) with a PostgreSQL store.
        from service.iolog.postgres_store import PostgresStore

        return PostgresStore(settings.log_store_url)
    return ParquetStore(Path(settings.log_store_url))


def check_store(settings: Settings) -> None:
    """Fail fast on a store that cannot work (an object store's unknown bucket, refused
    credentials, unreachable endpoint): raises ``LogStoreError`` with the reason. The other
    stores are checked by their first delivery, as before."""
    if settings.log_store_url.startswith("s3://"):
        from service.iolog.s3_store import open_s3_store

        open_s3_store(settings).check()
