"""``open_store(settings)``: the one place that turns ``VIGIL_LOG_STORE`` into a store object."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.iolog.parquet_store import ParquetStore
from service.settings import Settings

if TYPE_CHECKING:
    from service.iolog.postgres_store import PostgresStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(settings: Settings) -> bool:
    return settings.log_store_url.startswith(POSTGRES_SCHEMES)


def open_store(settings: Settings) -> ParquetStore | PostgresStore:
    """The backend ``VIGIL_LOG_STORE`` names: a PostgreSQL URL, or else a Parquet directory."""
    if is_postgres(settings):
        # Imported here: psycopg is only needed (and only paid for) with a PostgreSQL store.
        from service.iolog.postgres_store import PostgresStore

        return PostgresStore(settings.log_store_url)
    return ParquetStore(Path(settings.log_store_url))
