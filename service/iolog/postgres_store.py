"""The shared log store for many replicas: PostgreSQL, fed from the spool in batches with COPY.

vigil_predictions_<model>  one table per model: request_id, row, received_at, version, sha256,
    endpoint, status, latency_s, prediction, metadata (jsonb), one column per feature (double
    precision; categorical and PII-hashed: text) and per class (proba_<class>); PRIMARY KEY
    (request_id, row). A regressor's prediction is stored as text like a class name, and its
    catalog says "value" for it, so readers give it back as float64
vigil_rejected    request_id, received_at, model, version, endpoint, status, error, body
vigil_feedback    model, request_id, row, label, received_at, source, item: every label sent
    (history, so that a wrong or malicious one can be seen and undone); readers take the latest
    per row. ``item`` is the label's place in its request: with received_at, it keeps two labels
    of one row sent together apart, and the later one wins
vigil_log_columns which columns each (model, version) logs, in order, for readers

A segment goes in one transaction: COPY into a temporary staging table, then INSERT … SELECT …
ON CONFLICT DO NOTHING, so redelivering a segment (crash between commit and spool cleanup) adds
nothing. Rows are built from the Arrow tables of ``schema``, the one definition of the log.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from service.errors import LogStoreError
from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, UNKNOWN_SOURCE, Frame
from service.iolog.schema import (
    FEEDBACK_SCHEMA,
    REJECTED_SCHEMA,
    TS,
    BatchSource,
    feedback_table,
    group_frames,
    predictions_table,
    rejected_table,
    with_model,
)
from service.settings import redact_url, scrub

log = logging.getLogger("vigil.iolog.postgres")

REJECTED_TABLE = "vigil_rejected"
FEEDBACK_TABLE = "vigil_feedback"
COLUMNS_TABLE = "vigil_log_columns"
_MAX_IDENT = 63  # PostgreSQL truncates longer identifiers silently: names would collide
# Where the URL says nothing: fail fast when the server is away, notice a dead peer.
_CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "vigil-iolog",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
_HEAD = [  # (column, type) every predictions table starts with, in the Parquet files' order
    ("request_id", "text NOT NULL"),
    ("row", "integer NOT NULL"),
    ("received_at", "timestamptz NOT NULL"),
    ("version", "integer NOT NULL"),
    ("sha256", "text"),
    ("endpoint", "text"),
    ("status", "integer"),
    ("latency_s", "double precision"),
]
_TAIL = [("prediction", "text"), ("metadata", "jsonb"), ("role", "text NOT NULL DEFAULT 'primary'")]
# A shadow row shares request_id and row with its primary row: the role is part of the key.
_PREDICTIONS_KEY = '(request_id, "row", role)'
_FEEDBACK_KEY = '(model, request_id, "row", received_at, item)'
# Tables made before feedback history kept one label per (model, request_id, row): add the
# columns, widen the key. Each step is a no-op once done; replicas run it under the DDL lock.
_FEEDBACK_MIGRATION = [
    f"ALTER TABLE {FEEDBACK_TABLE} "
    f"ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT '{UNKNOWN_SOURCE}'",
    f"ALTER TABLE {FEEDBACK_TABLE} ADD COLUMN IF NOT EXISTS item integer NOT NULL DEFAULT 0",
]
_BASE_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {REJECTED_TABLE} (
        request_id text NOT NULL, received_at timestamptz NOT NULL, model text, version text,
        endpoint text, status integer, error text, body text,
        PRIMARY KEY (request_id, received_at))""",
    f"CREATE INDEX IF NOT EXISTS vigil_rejected_received_at ON {REJECTED_TABLE} (received_at)",
    f"""CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (
        model text NOT NULL, request_id text NOT NULL, "row" integer NOT NULL,
        label text NOT NULL, received_at timestamptz NOT NULL,
        source text NOT NULL DEFAULT '{UNKNOWN_SOURCE}', item integer NOT NULL DEFAULT 0,
        PRIMARY KEY {_FEEDBACK_KEY})""",
    f"""CREATE TABLE IF NOT EXISTS {COLUMNS_TABLE} (
        model text NOT NULL, version integer NOT NULL, position integer NOT NULL,
        name text NOT NULL, pg_name text NOT NULL, kind text NOT NULL,
        PRIMARY KEY (model, version, name))""",
]
_DDL_LOCK = 0x76696731  # advisory lock: replicas creating the same table at once would collide


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def predictions_table_name(model: str) -> str:
    """``vigil_predictions_<model>``; a hash suffix keeps lossy or long names apart."""
    safe = re.sub(r"[^a-z0-9_]", "_", model)
    if safe == model and len(safe) <= _MAX_IDENT - 18:
        return f"vigil_predictions_{safe}"
    return f"vigil_predictions_{safe[:36]}_{_short_hash(model, 8)}"


def column_name(name: str) -> str:
    """The SQL column of a log column: itself, unless too long for PostgreSQL."""
    raw = name.encode()
    if len(raw) <= _MAX_IDENT:
        return name
    return raw[:50].decode(errors="ignore") + "_" + _short_hash(name, 12)


def _connect_params(url: str) -> dict[str, Any]:
    params: dict[str, Any] = conninfo_to_dict(url)
    for key, value in _CONNECT_DEFAULTS.items():
        params.setdefault(key, value)
    return params


def _csv(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pcsv.write_csv(table, buf, pcsv.WriteOptions(include_header=False))
    return buf.getvalue()


def _without_nul(table: pa.Table) -> pa.Table:
    """PostgreSQL text cannot hold NUL: one such value would block every later segment."""
    for i, f in enumerate(table.schema):
        if not pa.types.is_string(f.type):
            continue
        col = table.column(i)
        if f.name == "metadata":
            if pc.any(pc.match_substring(col, "\\u0000")).as_py():
                fixed = [None if s is None else _json_without_nul(s) for s in col.to_pylist()]
                table = table.set_column(i, f, pa.array(fixed, pa.string()))
        elif pc.any(pc.match_substring(col, "\x00")).as_py():
            table = table.set_column(i, f, pc.replace_substring(col, "\x00", "\ufffd"))
    return table


def _json_without_nul(text: str) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("\x00", "\ufffd")
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return orjson.dumps(clean(orjson.loads(text))).decode()


def _ident_list(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


class PostgresStore:
    # A value or row the database refuses (bad encoding, out of range, a constraint): the
    # segment's fault, whereas a connection, disk or read-only error is the server's.
    content_errors: tuple[type[Exception], ...] = (psycopg.DataError, psycopg.IntegrityError)

    def __init__(self, url: str) -> None:
        # No connection here: the service must start (and spool) while PostgreSQL is away.
        self._url = url
        self.display = redact_url(url)
        try:
            self._params = _connect_params(url)
        except psycopg.Error as exc:  # libpq quotes the whole URL, password included
            raise LogStoreError(
                f"VIGIL_LOG_STORE {self.display} is not a valid PostgreSQL URL: "
                f"{scrub(str(exc), url)}"
            ) from None
        self._conn: psycopg.Connection[Any] | None = None
        self._base_ready = False
        self._versions_ready: set[tuple[str, int]] = set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.display!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # autocommit: every transaction is an explicit block, never one left idle and open.
            return psycopg.connect(autocommit=True, **self._params)
        except psycopg.Error as exc:
            clean = scrub(str(exc), self._url)
            if clean == str(exc):
                raise
            raise type(exc)(clean) from None  # the original, password and all, stays unprinted

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = self._connect()
        return self._conn

    def ping(self) -> bool:
        try:
            self._connection().execute("SELECT 1")
        except psycopg.Error:
            self.close()
            return False
        return True

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    # -- schema ----------------------------------------------------------------------------
    def _ensure_base(self, conn: psycopg.Connection[Any]) -> None:
        if self._base_ready:
            return
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '10s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for ddl in _BASE_DDL:
                conn.execute(ddl)
            _migrate_feedback(conn)
        self._base_ready = True

    def _ensure_version(
        self, conn: psycopg.Connection[Any], model: str, version: int, table: pa.Table
    ) -> None:
        """Create the model's table, add this version's columns, record them for readers."""
        if (model, version) in self._versions_ready:
            return
        name = predictions_table_name(model)
        target = sql.Identifier(name)
        fixed = {c for c, _ in (*_HEAD, *_TAIL)}
        wanted = [
            (c, pa.types.is_string(t))
            for c, t in zip(table.column_names, table.schema.types, strict=True)
            if c not in fixed
        ]
        # One table per transaction: waiting on a second table while holding the first's lock
        # could deadlock with another replica's delivery.
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '10s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in (*_HEAD, *_TAIL)
            )
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY {})").format(
                    target, cols, sql.SQL(_PREDICTIONS_KEY)
                )
            )
            _migrate_roles(conn, name)
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (received_at)").format(
                    sql.Identifier(f"vigil_ix_{_short_hash(name, 16)}"), target
                )
            )
            existing = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    (name,),
                ).fetchall()
            )
            for col, is_text in wanted:
                pg = column_name(col)
                have = existing.get(pg)
                if have is None:
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            target,
                            sql.Identifier(pg),
                            sql.SQL("text" if is_text else "double precision"),
                        )
                    )
                elif is_text and have != "text":
                    # A feature that became PII-hashed: keep old values, readable as text.
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE text USING {}::text").format(
                            target, sql.Identifier(pg), sql.Identifier(pg)
                        )
                    )
            after = table.column_names.index("prediction")
            kinds = [
                (model, version, i, c, column_name(c), _kind(c, is_text, table, after))
                for i, (c, is_text) in enumerate(wanted)
            ]
            if pa.types.is_floating(table.schema.field("prediction").type):
                kinds.append((model, version, len(kinds), "prediction", "prediction", "value"))
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {} (model, version, position, name, pg_name, kind) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(sql.Identifier(COLUMNS_TABLE)),
                    kinds,
                )
        self._versions_ready.add((model, version))

    # -- writing ---------------------------------------------------------------------------
    def deliver(self, frames: list[Frame], segment_id: str) -> dict[str, int]:
        preds, rejected, feedback = group_frames(frames)
        by_version: dict[tuple[str, int], list[Frame]] = defaultdict(list)
        for (model, version, _day), group in preds.items():
            by_version[(model, version)].extend(group)
        tables = {key: predictions_table(group) for key, group in by_version.items()}
        counts = {PREDICTIONS: 0, REJECTED: 0, FEEDBACK: 0}
        try:
            conn = self._connection()
            self._ensure_base(conn)
            for (model, version), table in tables.items():
                self._ensure_version(conn, model, version, table)
            with conn.transaction(), conn.cursor() as cur:
                for i, ((model, version), table) in enumerate(tables.items()):
                    counts[PREDICTIONS] += self._insert_predictions(cur, i, model, version, table)
                if rejected:
                    table = rejected_table([f for group in rejected.values() for f in group])
                    counts[REJECTED] = self._insert_rejected(cur, table)
                if feedback:
                    counts[FEEDBACK] = self._insert_feedback(cur, feedback)
        except Exception:
            # Forget what we believe about the schema too: it may be what failed.
            self.close()
            self._base_ready = False
            self._versions_ready.clear()
            raise
        log.debug("delivered segment %s: %s", segment_id, counts)
        return counts

    def _copy_in(
        self, cur: psycopg.Cursor[Any], stage: str, table: pa.Table, columns: list[str]
    ) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(stage), _ident_list(columns)
        )
        with cur.copy(statement) as copy:
            copy.write(_csv(_without_nul(table)))

    def _insert_predictions(
        self, cur: psycopg.Cursor[Any], i: int, model: str, version: int, table: pa.Table
    ) -> int:
        target = sql.Identifier(predictions_table_name(model))
        stage = f"vigil_stage_predictions_{i}"
        table = table.append_column(
            "version", pa.array(np.full(table.num_rows, version, dtype=np.int32))
        )
        columns = [column_name(c) for c in table.column_names]
        # The insert's lock first: taking it after LIKE's weaker one is an upgrade that deadlocks
        # with another replica's ALTER TABLE queued in between.
        cur.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(target))
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                sql.Identifier(stage), target
            )
        )
        self._copy_in(cur, stage, table, columns)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                target, _ident_list(columns), _ident_list(columns), sql.Identifier(stage)
            )
        )
        return int(table.num_rows)

    def _insert_rejected(self, cur: psycopg.Cursor[Any], table: pa.Table) -> int:
        cur.execute(f"LOCK TABLE {REJECTED_TABLE} IN ROW EXCLUSIVE MODE")
        cur.execute(
            f"CREATE TEMP TABLE vigil_stage_rejected (LIKE {REJECTED_TABLE}) ON COMMIT DROP"
        )
        self._copy_in(cur, "vigil_stage_rejected", table, table.column_names)
        cur.execute(
            sql.SQL(
                "INSERT INTO {} SELECT * FROM vigil_stage_rejected ON CONFLICT DO NOTHING"
            ).format(sql.Identifier(REJECTED_TABLE))
        )
        return int(table.num_rows)

    def _insert_feedback(self, cur: psycopg.Cursor[Any], groups: dict[Any, list[Frame]]) -> int:
        """Every label is kept; a redelivered segment has the same keys and adds nothing."""
        parts = []
        for (model, _day), frames in groups.items():
            t = feedback_table(frames)
            item = np.concatenate([np.arange(len(f.header["items"])) for f in frames])
            t = t.append_column("model", pa.array([model] * t.num_rows, pa.string()))
            parts.append(t.append_column("item", pa.array(item.astype(np.int32))))
        table = pa.concat_tables(parts)
        cur.execute(f"LOCK TABLE {FEEDBACK_TABLE} IN ROW EXCLUSIVE MODE")
        cur.execute(
            f"CREATE TEMP TABLE vigil_stage_feedback (LIKE {FEEDBACK_TABLE}) ON COMMIT DROP"
        )
        self._copy_in(cur, "vigil_stage_feedback", table, table.column_names)
        columns = _ident_list(table.column_names)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM vigil_stage_feedback "
                    "ON CONFLICT DO NOTHING").format(
                sql.Identifier(FEEDBACK_TABLE), columns, columns
            )
        )  # fmt: skip
        return int(table.num_rows)

    # -- reading ---------------------------------------------------------------------------
    def prediction_batches(
        self,
        model: str,
        version: int | None,
        since: datetime | None,
        until: datetime | None,
        columns: list[str] | None = None,
        batch_rows: int = 65_536,
    ) -> list[BatchSource]:
        """The window like the Parquet files plus ``model`` and ``version`` (``metadata`` as
        compact JSON), its rows streamed from COPY in blocks, never the whole result at once."""
        where, params = _window(since, until)
        name = predictions_table_name(model)
        with self._reading() as conn:
            catalog = _catalog(conn, model, version)
            if not catalog or not _exists(conn, name):
                return []
            # Columns of versions without rows in the window would be all-null: the Parquet
            # files lack them, so leave them out here too. EXISTS stops at a version's first row.
            present = {
                int(r[0])
                for r in conn.execute(
                    sql.SQL(
                        "SELECT v FROM unnest(%s::integer[]) AS v "
                        "WHERE EXISTS (SELECT 1 FROM {} WHERE {})"
                    ).format(
                        sql.Identifier(name),
                        sql.SQL(" AND ").join([sql.SQL("version = v"), *where]),
                    ),
                    [sorted(catalog), *params],
                )
            }
        if version is not None:
            where.append(sql.SQL("version = %s"))
            params.append(version)
        shown = _ordered_columns({v: cols for v, cols in catalog.items() if v in present})
        if columns is not None:
            shown = [c for c in shown if c.name in columns]
        if not shown:
            return []
        query = sql.SQL("SELECT {} FROM {}{} ORDER BY received_at, request_id, {}").format(
            sql.SQL(", ").join(_select(c) for c in shown),
            sql.Identifier(name),
            _where(where),
            sql.Identifier("row"),
        )
        types = {c.name: c.type for c in shown}
        schema = with_model(pa.schema(list(types.items())).empty_table(), model, -1).schema
        if columns is not None:
            schema = pa.schema([f for f in schema if f.name in columns])
        batches = self._stream(query, params, types, batch_rows)
        return [BatchSource(schema, (with_model(b, model, -1) for b in batches))]

    def _stream(
        self, query: sql.Composable, params: list[Any], types: dict[str, pa.DataType], rows: int
    ) -> Iterator[pa.RecordBatch]:
        with self._reading() as conn:
            for batch in _copy_batches(conn, query, params, types, rows):
                if "metadata" in types:
                    i = batch.schema.get_field_index("metadata")
                    batch = batch.set_column(i, "metadata", _compact_json(batch.column(i)))
                yield batch

    def feedback_batches(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The labels of ``model``; with a window, only those of rows logged in it (the join
        runs on the server, so labels of other days never travel)."""
        where, params = _window(since, until)  # only the parameters are used as such
        fb = sql.Identifier(FEEDBACK_TABLE)
        conditions: list[sql.Composable] = [sql.SQL("f.model = %s")]
        with self._reading() as conn:
            if not _exists(conn, FEEDBACK_TABLE):
                return
            if where and _exists(conn, predictions_table_name(model)):
                in_window, _ = _window(since, until, sql.Identifier("p", "received_at"))
                conditions.append(
                    sql.SQL(
                        "EXISTS (SELECT 1 FROM {} p WHERE p.request_id = f.request_id "
                        'AND p."row" = f."row" AND {})'
                    ).format(
                        sql.Identifier(predictions_table_name(model)),
                        sql.SQL(" AND ").join(in_window),
                    )
                )
            else:
                params = []  # no window (or no predictions table): every label of the model
            # every label with its source, in the order received (ties: in the order sent)
            query = sql.SQL(
                'SELECT f.request_id, f."row", f.label, {}, f.source FROM {} f{} '
                "ORDER BY f.received_at, f.item"
            ).format(_epoch_us("received_at"), fb, _where(conditions))
            types = dict(zip(FEEDBACK_SCHEMA.names, FEEDBACK_SCHEMA.types, strict=True))
            yield from _copy_batches(conn, query, [model, *params], types, 65_536)

    def read_predictions(
        self, model: str, version: int | None, since: datetime | None, until: datetime | None
    ) -> pd.DataFrame:
        """The window as one DataFrame (small windows, tests), without the ``model`` column."""
        sources = self.prediction_batches(model, version, since, until)
        if not sources:
            return pd.DataFrame()
        table = pa.Table.from_batches(list(sources[0].batches), sources[0].schema)
        return table.drop_columns(["model"]).to_pandas() if table.num_rows else pd.DataFrame()

    def read_feedback(self, model: str) -> pd.DataFrame:
        batches = list(self.feedback_batches(model))
        return pa.Table.from_batches(batches, FEEDBACK_SCHEMA).to_pandas()

    def rejected_rows(self, since: datetime | None, until: datetime | None) -> pa.Table:
        where, params = _window(since, until)
        select = [
            _epoch_us(n) if n == "received_at" else sql.Identifier(n) for n in REJECTED_SCHEMA.names
        ]
        query = sql.SQL("SELECT {} FROM {}{}").format(
            sql.SQL(", ").join(select), sql.Identifier(REJECTED_TABLE), _where(where)
        )
        with self._reading() as conn:
            if not _exists(conn, REJECTED_TABLE):
                return REJECTED_SCHEMA.empty_table()
            types = dict(zip(REJECTED_SCHEMA.names, REJECTED_SCHEMA.types, strict=True))
            batches = list(_copy_batches(conn, query, params, types, 65_536))
        return pa.Table.from_batches(batches, REJECTED_SCHEMA)

    # -- retention -------------------------------------------------------------------------
    def prune(self, older_than: datetime) -> dict[str, int]:
        """Delete every record received before ``older_than``; counts per table."""
        counts = {PREDICTIONS: 0, REJECTED: 0, FEEDBACK: 0}
        with self._reading() as conn, conn.transaction():
            if not _exists(conn, COLUMNS_TABLE):
                return counts
            distinct = sql.SQL("SELECT DISTINCT model FROM {}").format(
                sql.Identifier(COLUMNS_TABLE)
            )
            models = [r[0] for r in conn.execute(distinct)]
            for model in models:
                name = predictions_table_name(model)
                if _exists(conn, name):
                    cur = conn.execute(
                        sql.SQL("DELETE FROM {} WHERE received_at < %s").format(
                            sql.Identifier(name)
                        ),
                        (older_than,),
                    )
                    counts[PREDICTIONS] += cur.rowcount
            for key, table in ((REJECTED, REJECTED_TABLE), (FEEDBACK, FEEDBACK_TABLE)):
                cur = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE received_at < %s").format(sql.Identifier(table)),
                    (older_than,),
                )
                counts[key] = cur.rowcount
        return counts


def _migrate_feedback(conn: psycopg.Connection[Any]) -> None:
    """Give a feedback table from before label history its columns and its wider key."""
    for ddl in _FEEDBACK_MIGRATION:
        conn.execute(ddl)
    row = conn.execute(
        "SELECT conname, array_length(conkey, 1) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'p'",
        (FEEDBACK_TABLE,),
    ).fetchone()
    if row is not None and row[1] == 5:
        return
    if row is not None:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(FEEDBACK_TABLE), sql.Identifier(row[0])
            )
        )
    conn.execute(f"ALTER TABLE {FEEDBACK_TABLE} ADD PRIMARY KEY {_FEEDBACK_KEY}")
    log.info("migrated %s to keep every label (history)", FEEDBACK_TABLE)


def _migrate_roles(conn: psycopg.Connection[Any], name: str) -> None:
    """Give a predictions table from before rollouts its role column (old rows: primary) and a
    key that includes it. A no-op once done; run under the DDL lock."""
    target = sql.Identifier(name)
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'primary'"
        ).format(target)
    )
    row = conn.execute(
        "SELECT conname, array_length(conkey, 1) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'p'",
        (name,),
    ).fetchone()
    if row is not None and row[1] == 3:
        return
    if row is not None:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(target, sql.Identifier(row[0]))
        )
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY {}").format(target, sql.SQL(_PREDICTIONS_KEY))
    )
    log.info("migrated %s: rows carry their role (primary, shadow, canary)", name)


# -- helpers for reading ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    pg_name: str
    kind: str  # fixed | feature | hashed | proba
    type: pa.DataType


_FIXED_TYPES = {
    "request_id": pa.string(),
    "row": pa.int32(),
    "received_at": TS,
    "version": pa.int64(),
    "sha256": pa.string(),
    "endpoint": pa.string(),
    "status": pa.int32(),
    "latency_s": pa.float64(),
    "prediction": pa.string(),
    "metadata": pa.string(),
    "role": pa.string(),
}
_KIND_TYPES = {
    "feature": pa.float64(),
    "hashed": pa.string(),  # any text feature: PII-hashed or categorical
    "proba": pa.float64(),
    "value": pa.float64(),  # a regressor's prediction
}


def _kind(name: str, is_text: bool, table: pa.Table, prediction_at: int) -> str:
    if is_text:
        return "hashed"
    return "proba" if table.column_names.index(name) > prediction_at else "feature"


def _fixed(name: str) -> _Column:
    return _Column(name, name, "fixed", _FIXED_TYPES[name])


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = %s)",
        (table,),
    ).fetchone()
    return bool(row and row[0])


def _catalog(
    conn: psycopg.Connection[Any], model: str, version: int | None
) -> dict[int, list[_Column]]:
    if not _exists(conn, COLUMNS_TABLE):
        return {}
    query = sql.SQL(
        "SELECT version, name, pg_name, kind FROM {} WHERE model = %s{} ORDER BY version, position"
    ).format(sql.Identifier(COLUMNS_TABLE), sql.SQL("" if version is None else " AND version = %s"))
    params: list[Any] = [model] if version is None else [model, version]
    out: dict[int, list[_Column]] = defaultdict(list)
    for v, name, pg_name, kind in conn.execute(query, params):
        out[int(v)].append(_Column(name, pg_name, kind, _KIND_TYPES[kind]))
    return dict(out)


def _ordered_columns(catalog: dict[int, list[_Column]]) -> list[_Column]:
    """Each version's columns in the Parquet files' order (head, features, hashed, prediction,
    probabilities, metadata); a later version's new columns follow, as pandas concat does."""
    # A feature that is hashed in one version and numeric in another reads as text.
    hashed = {c.name for cols in catalog.values() for c in cols if c.kind == "hashed"}
    out: dict[str, _Column] = {}
    value = next((c for cols in catalog.values() for c in cols if c.kind == "value"), None)
    prediction = value or _fixed("prediction")
    for _version, cols in sorted(catalog.items()):
        body = [_Column(c.name, c.pg_name, "hashed", pa.string()) if c.name in hashed else c
                for c in cols]  # fmt: skip
        for c in (
            *(_fixed(n) for n, _ in _HEAD),
            *(c for c in body if c.kind == "feature"),
            *(c for c in body if c.kind == "hashed"),
            prediction,
            *(c for c in body if c.kind == "proba"),
            _fixed("metadata"),
            _fixed("role"),
        ):
            out.setdefault(c.name, c)
    return list(out.values())


def _epoch_us(column: str) -> sql.Composable:
    return sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(sql.Identifier(column))


def _select(c: _Column) -> sql.Composable:
    if c.name == "received_at":
        return _epoch_us(c.pg_name)
    if c.name == "metadata":
        return sql.SQL("metadata::text")
    return sql.Identifier(c.pg_name)


def _window(
    since: datetime | None,
    until: datetime | None,
    column: sql.Composable = sql.Identifier("received_at"),
) -> tuple[list[sql.Composable], list[Any]]:
    where: list[sql.Composable] = []
    params: list[Any] = []
    if since is not None:
        where.append(sql.SQL("{} >= %s").format(column))
        params.append(since)
    if until is not None:
        where.append(sql.SQL("{} < %s").format(column))
        params.append(until)
    return where, params


def _where(conditions: list[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)


class _CopyReader(io.RawIOBase):
    """COPY's chunks as a file, for Arrow's streaming CSV reader."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = bytes(chunk)
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def _copy_batches(
    conn: psycopg.Connection[Any],
    query: sql.Composable,
    params: list[Any],
    types: dict[str, pa.DataType],
    rows: int,
) -> Iterator[pa.RecordBatch]:
    """Run ``query`` as COPY … TO STDOUT (CSV), parsed by Arrow block by block as it arrives."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
    names = list(types)
    raw = {n: pa.int64() if t == TS else t for n, t in types.items()}
    schema = pa.schema(list(types.items()))
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        source = io.BufferedReader(_CopyReader(iter(copy)), buffer_size=1 << 20)
        if not source.peek(1):
            return
        # Arrow cuts CSV batches by bytes: about 512 bytes a logged row makes ~``rows`` a batch.
        reader = pcsv.open_csv(
            source,
            read_options=pcsv.ReadOptions(column_names=names, block_size=max(rows * 512, 1 << 10)),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=raw,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            arrays = [
                batch.column(i).cast(TS) if t == TS else batch.column(i)
                for i, t in enumerate(types.values())
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _compact_json(column: pa.Array) -> pa.Array:
    """jsonb prints ``{"k": "v"}``; the Parquet files hold orjson's ``{"k":"v"}``."""
    encoded = column.dictionary_encode()
    values = [
        None if s is None else orjson.dumps(orjson.loads(s)).decode()
        for s in encoded.dictionary.to_pylist()
    ]
    return pa.array(values, pa.string()).take(encoded.indices)
