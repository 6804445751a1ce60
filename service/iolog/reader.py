"""Reading the I/O log: everything acknowledged, whether still in the spool or already stored.

``read_predictions`` is what data scientists, the drift job, export and back-test use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, read_frames
from service.iolog.parquet_store import ParquetStore
from service.iolog.schema import (
    FEEDBACK_SCHEMA,
    REJECTED_SCHEMA,
    conform_feedback,
    feedback_table,
    group_frames,
    latest_labels,
    predictions_table,
    rejected_table,
)
from service.iolog.spool import spool_segments
from service.settings import Settings

KEY = ["request_id", "row"]


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _spool_frames(settings: Settings, table: str) -> list:  # type: ignore[type-arg]
    return [
        f
        for seg in spool_segments(settings.spool_dir)
        for f in read_frames(seg)
        if f.table == table
    ]


class CorruptLogFile(Exception):
    """A file of the Parquet log store cannot be read; its path is in the message."""


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def is_postgres(settings: Settings) -> bool:
    return settings.log_store_url.startswith(("postgresql://", "postgres://"))


def _window(df: pd.DataFrame, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    if since is not None:
        df = df[df["received_at"] >= pd.Timestamp(since)]
    if until is not None:
        df = df[df["received_at"] < pd.Timestamp(until)]
    return df


def read_predictions(
    settings: Settings,
    model: str,
    version: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    with_labels: bool = True,
) -> pd.DataFrame:
    """One row per predicted row, ordered by time, with the ground-truth ``label`` joined."""
    since, until = _utc(since), _utc(until)
    tables: list[pa.Table] = []
    versions: list[int] = []
    # The spool first: a segment delivered and deleted between the two reads is then seen in
    # the store; records read twice are dropped by the (request_id, row) de-duplication.
    preds, _, _ = group_frames(_spool_frames(settings, PREDICTIONS))
    for (m, v, _d), frames in preds.items():
        if m == model and (version is None or v == version):
            tables.append(predictions_table(frames))
            versions.append(v)
    if is_postgres(settings):
        from service.iolog.postgres_store import PostgresStore

        stored = PostgresStore(settings.log_store_url).read_predictions(
            model, version, since, until
        )
        if not stored.empty:
            tables.append(pa.Table.from_pandas(stored, preserve_index=False))
            versions.append(-1)
    else:
        store = ParquetStore(Path(settings.log_store_url))
        first = since.date() if since else None
        last = until.date() if until else None
        for v, files in store.prediction_files(model, version, first, last).items():
            for f in files:
                tables.append(_read_parquet(f))
                versions.append(v)
    if not tables:
        return _empty_predictions(with_labels)
    frames_out = []
    for t, v in zip(tables, versions, strict=True):
        df = t.to_pandas()
        if v >= 0:
            df.insert(3, "version", v)
        frames_out.append(df)
    df = pd.concat(frames_out, ignore_index=True, sort=False)
    if "model" not in df.columns:
        df.insert(3, "model", model)
    df["version"] = df["version"].astype("int64")
    df = _window(df, since, until)
    df = df.drop_duplicates(KEY, keep="first").sort_values(["received_at", "request_id", "row"])
    df = df.reset_index(drop=True)
    if with_labels:
        fb = read_feedback(settings, model)
        if fb.empty:
            df["label"] = None
        else:
            fb = latest_labels(fb)
            df = df.merge(fb[[*KEY, "label"]], on=KEY, how="left")
            df["label"] = df["label"].astype(object).where(df["label"].notna(), None)
    return df


def _empty_predictions(with_labels: bool) -> pd.DataFrame:
    cols = ["request_id", "row", "received_at", "model", "version", "sha256", "endpoint",
            "status", "latency_s", "prediction", "metadata"]  # fmt: skip
    if with_labels:
        cols.append("label")
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df["received_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return df


def read_feedback(settings: Settings, model: str) -> pd.DataFrame:
    """Every label received for the model (its history), in the order received; the one in
    force per row is ``latest_labels(read_feedback(…))``."""
    _, _, fb = group_frames(_spool_frames(settings, FEEDBACK))  # spool first, as above
    tables = [feedback_table(frames) for (m, _d), frames in fb.items() if m == model]
    if is_postgres(settings):
        from service.iolog.postgres_store import PostgresStore

        stored = PostgresStore(settings.log_store_url).read_feedback(model)
        tables.append(pa.Table.from_pandas(stored, schema=FEEDBACK_SCHEMA, preserve_index=False))
    else:
        parquet = ParquetStore(Path(settings.log_store_url))
        tables += [conform_feedback(_read_parquet(f)) for f in parquet.feedback_files(model)]
    if not tables:
        return FEEDBACK_SCHEMA.empty_table().to_pandas()
    df = pa.concat_tables(tables).to_pandas()
    # A segment delivered between the two reads is seen twice: keep one copy (the last, so
    # that labels sent in one instant keep their order).
    df = df.sort_values("received_at", kind="stable").drop_duplicates(keep="last")
    return df.reset_index(drop=True)


def read_rejected(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> pd.DataFrame:
    since, until = _utc(since), _utc(until)
    _, rej, _ = group_frames(_spool_frames(settings, REJECTED))  # spool first, as above
    tables = [rejected_table(frames) for frames in rej.values()]
    if is_postgres(settings):
        from service.iolog.postgres_store import PostgresStore

        stored = PostgresStore(settings.log_store_url).read_rejected(since, until)
        tables.append(pa.Table.from_pandas(stored, schema=REJECTED_SCHEMA, preserve_index=False))
    else:
        store = ParquetStore(Path(settings.log_store_url))
        first, last = (since.date() if since else None), (until.date() if until else None)
        tables += [_read_parquet(f) for f in store.rejected_files(first, last)]
    df = (pa.concat_tables(tables) if tables else REJECTED_SCHEMA.empty_table()).to_pandas()
    df = df.drop_duplicates(["request_id", "received_at"], keep="first")
    return _window(df, since, until).sort_values("received_at").reset_index(drop=True)
