"""The PostgreSQL log store against a real PostgreSQL server on loopback: no mocks, no stand-in."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from model_store.manifest import PiiPolicy
from service.cli.main import app as cli
from service.iolog.frames import (
    Frame,
    PiiRules,
    Schema,
    encode_feedback,
    encode_prediction,
    encode_rejected,
    read_frames,
)
from service.iolog.labels import labels_in_force
from service.iolog.parquet_store import ParquetStore
from service.iolog.postgres_store import PostgresStore, predictions_table_name
from service.iolog.reader import read_feedback, read_predictions, read_rejected
from service.iolog.record import IORecord, RejectedRecord
from service.iolog.retention import prune_store
from service.iolog.spool import spool_segments
from service.settings import Settings
from tests import pgserver
from tests.conftest import MODEL
from tests.pgserver import PgServer
from tests.servers import VigilServer

pytestmark = pytest.mark.postgres
pg_server = pgserver.pg_server  # fixtures, until the lead moves them to conftest.py
pg_dsn = pgserver.pg_dsn
KEY = ["request_id", "row"]
FEATURES = ("mean_radius", "mean_texture", "mean_area")
CLASSES = ("malignant", "benign")


def _env(dsn: str) -> dict[str, str]:
    # Short intervals so that delivery (and retry while PostgreSQL is away) happens within tests.
    return {
        "VIGIL_LOG_STORE": dsn,
        "VIGIL_COMPACT_INTERVAL_S": "0.2",
        "VIGIL_SPOOL_SEGMENT_SECONDS": "0.3",
    }


def _settings(home: Path, log_store: str) -> Settings:
    return Settings(model_store=home / "models", data_dir=home / "data", log_store=log_store)


def _frames(tmp_path: Path, blobs: list[bytes]) -> list[Frame]:
    seg = tmp_path / f"seg-{uuid.uuid4().hex}.seg"
    seg.write_bytes(b"".join(blobs))
    return list(read_frames(seg))


def _record(
    rid: str,
    version: int,
    x: np.ndarray,
    at: float,
    meta: dict[str, str],
    features: tuple[str, ...] = FEATURES,
    pii: PiiRules | None = None,
) -> bytes:
    proba = np.column_stack([x[:, 0] % 1, 1 - x[:, 0] % 1]).astype("f4")
    labels = (x[:, 1] > 0).astype("i4")
    record = IORecord(
        rid, at, MODEL, version, f"sha-{version}", "v1_predict", 200, 0.002, features, x,
        CLASSES, labels, proba, meta,
    )  # fmt: skip
    schema = Schema.build(record, pii)  # declared before use, as the spool does per segment
    return schema.frame() + encode_prediction(record, schema, pii)


def _na_as_none(df: pd.DataFrame) -> pd.DataFrame:
    # pandas fills a column missing from one version with NaN, Arrow with None: same meaning.
    return df.astype(object).where(df.notna(), None)


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert row is not None
    return int(row[0])


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


# -- store level: idempotence and parity with the Parquet store ------------------------------
def test_redelivering_a_segment_adds_nothing_and_latest_label_wins(
    pg_dsn: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    now = time.time()
    seg_a = [
        _record(f"a{i}", 1, rng.normal(size=(3, 3)), now + i, {"k": f"v{i}"}) for i in range(5)
    ]
    seg_b = [
        _record("b0", 2, rng.normal(size=(2, 3)), now + 9, {"k": "nul\x00inside"}),
        encode_rejected(
            RejectedRecord("bad", now, MODEL, "1", "v1_predict", 422, "e\x00", b"b"), "e\x00", "b"
        ),
        encode_feedback(MODEL, now + 10, [("a0", 0, "benign"), ("a0", 0, "malignant")]),
    ]
    store = PostgresStore(pg_dsn)
    first = store.deliver(_frames(tmp_path, seg_a), "seg-a")
    assert first == {"predictions": 15, "rejected": 0, "feedback": 0}
    for _ in range(2):  # a crash between commit and spool cleanup delivers a segment again
        store.deliver(_frames(tmp_path, seg_a + seg_b), "seg-ab")
    # An older label arriving late (a slow replica's spool) must not override the newer one.
    store.deliver(_frames(tmp_path, [encode_feedback(MODEL, now, [("a0", 0, "benign")])]), "old")
    store.close()

    assert _count(pg_dsn, predictions_table_name(MODEL)) == 17
    assert _count(pg_dsn, "vigil_rejected") == 1
    df = store.read_predictions(MODEL, None, None, None)
    assert not df.duplicated(KEY).any()
    assert sorted(df["request_id"].unique()) == ["a0", "a1", "a2", "a3", "a4", "b0"]
    # A NUL byte (PostgreSQL text cannot hold one) is replaced, not a poison pill for the spool.
    assert orjson.loads(df.loc[df["request_id"] == "b0", "metadata"].iloc[0]) == {
        "k": "nul\ufffdinside"
    }
    fb = store.read_feedback(MODEL)  # every label, oldest first; the latest is in force
    assert fb[[*KEY, "label"]].values.tolist() == [
        ["a0", 0, "benign"],
        ["a0", 0, "benign"],
        ["a0", 0, "malignant"],
    ]
    assert labels_in_force(fb)[[*KEY, "label"]].values.tolist() == [["a0", 0, "malignant"]]


def test_reader_returns_the_same_frame_from_postgres_and_parquet(
    pg_dsn: str, tmp_path: Path, home: Path
) -> None:
    # v2 brings a new feature (its name too long for a PostgreSQL identifier) and a PII feature
    # logged as a keyed hash: new columns on the fly.
    rng = np.random.default_rng(3)
    now = float(int(time.time()) - 3600)  # whole seconds: window bounds are exact
    v2 = (*FEATURES, "worst_area_" + "x" * 70, "ssn")
    pii = PiiRules({"ssn": PiiPolicy.HASH}, {}, b"secret")
    ssn = [float(123456780 + i) for i in range(32)]
    blobs = []
    for i in range(8):
        x = rng.normal(size=(4, 3)) * 1e3
        if i % 2:
            x = np.column_stack([x, rng.normal(size=4), ssn[i * 4 : i * 4 + 4]])
            blobs.append(_record(f"r{i}", 2, x, now + i, {"customer": f"c{i}"}, v2, pii))
        else:
            blobs.append(_record(f"r{i}", 1, x, now + i, {"customer": f"c{i}"}))
    blobs.append(encode_feedback(MODEL, now + 20, [("r1", 2, "benign"), ("r6", 0, "malignant")]))
    frames = _frames(tmp_path, blobs)
    PostgresStore(pg_dsn).deliver(frames, "s1")
    ParquetStore(tmp_path / "parquet").deliver(frames, "s1")
    pg = _settings(home, pg_dsn)
    pq = _settings(home, str(tmp_path / "parquet"))
    for version in (None, 1, 2):
        a = read_predictions(pg, MODEL, version)
        b = read_predictions(pq, MODEL, version)
        assert len(a) == (32 if version is None else 16)
        assert ("ssn" in a.columns) == (version != 1)
        pd.testing.assert_frame_equal(_na_as_none(a), _na_as_none(b))
        assert a["label"].notna().sum() == {None: 2, 1: 1, 2: 1}[version]
    since = datetime.fromtimestamp(now + 3, UTC)
    window = read_predictions(pg, MODEL, None, since, since + timedelta(seconds=2))
    assert sorted(window["request_id"].unique()) == ["r3", "r4"]
    with psycopg.connect(pg_dsn) as conn:
        dump = " ".join(
            str(r[0])
            for t in (predictions_table_name(MODEL), "vigil_feedback", "vigil_log_columns")
            for r in conn.execute(f'SELECT t::text FROM "{t}" t')
        )
    assert "ssn" in dump and not any(str(v) in dump or repr(v) in dump for v in ssn)


def test_every_label_is_kept_with_time_and_source_and_the_latest_is_used(
    pg_dsn: str, tmp_path: Path, home: Path
) -> None:
    """Two labels for one row (a poisoning attempt, then the fix) are both in the history of
    either store; readers (export, drift, back-test) use the latest."""
    now = float(int(time.time()) - 600)
    blobs = [
        _record("p", 1, np.ones((2, 3)), now, {}),
        encode_feedback(MODEL, now + 1, [("p", 0, "benign"), ("p", 1, "benign")], "token"),
        encode_feedback(MODEL, now + 2, [("p", 0, "malignant")], "anonymous"),
        encode_feedback(MODEL, now + 3, [("p", 0, "benign")], "token"),
    ]
    late = [encode_feedback(MODEL, now + 0.5, [("p", 1, "malignant")], "anonymous")]
    for name, store in (("pg", PostgresStore(pg_dsn)), ("pq", ParquetStore(tmp_path / "pq"))):
        for _ in range(2):  # redelivered: no label twice
            store.deliver(_frames(tmp_path, blobs), "s1")
        store.deliver(_frames(tmp_path, late), "s2")  # older than what is there: kept, not used
        settings = _settings(home, pg_dsn if name == "pg" else str(tmp_path / "pq"))
        history = read_feedback(settings, MODEL)
        assert history[[*KEY, "label", "source"]].values.tolist() == [
            ["p", 1, "malignant", "anonymous"],
            ["p", 0, "benign", "token"],
            ["p", 1, "benign", "token"],
            ["p", 0, "malignant", "anonymous"],
            ["p", 0, "benign", "token"],
        ], name
        assert history["received_at"].is_monotonic_increasing
        df = read_predictions(settings, MODEL)
        assert df["label"].tolist() == ["benign", "benign"], name


def test_a_feedback_table_from_before_history_is_migrated_once_by_concurrent_replicas(
    pg_dsn: str, tmp_path: Path, home: Path
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the table as earlier versions made it
        conn.execute(
            """CREATE TABLE vigil_feedback (
            model text NOT NULL, request_id text NOT NULL, "row" integer NOT NULL,
            label text NOT NULL, received_at timestamptz NOT NULL,
            PRIMARY KEY (model, request_id, "row"))"""
        )
        conn.execute(
            "INSERT INTO vigil_feedback VALUES (%s, 'old', 0, 'benign', now() - interval '1 h')",
            (MODEL,),
        )
    now = time.time()
    errors: list[BaseException] = []

    def replica(i: int) -> None:
        frames = _frames(tmp_path, [encode_feedback(MODEL, now + i, [("old", 0, "malignant")])])
        try:
            PostgresStore(pg_dsn).deliver(frames, f"r{i}")
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    PostgresStore(pg_dsn).deliver(_frames(tmp_path, []), "again")  # a restart: nothing to do
    history = read_feedback(_settings(home, pg_dsn), MODEL)
    assert history["label"].tolist() == ["benign", *["malignant"] * 4]
    assert history["source"].tolist() == ["unknown"] * 5  # frames written without a source
    with psycopg.connect(pg_dsn) as conn:
        key = conn.execute(
            "SELECT array_length(conkey, 1) FROM pg_constraint "
            "WHERE conrelid = 'vigil_feedback'::regclass AND contype = 'p'"
        ).fetchall()
    assert key == [(5,)]


def test_replicas_delivering_a_new_model_at_once_all_land(pg_dsn: str, tmp_path: Path) -> None:
    # Replicas meet a new model and a new version at the same moment: schema changes must not
    # collide (concurrent CREATE TABLE IF NOT EXISTS fails without serialising them).
    rng = np.random.default_rng(5)
    wide = (*FEATURES, "worst_area")
    segments = [
        _frames(tmp_path, [
            _record(f"w{k}-{i}", 1 + k % 2, rng.normal(size=(2, 3 + k % 2)), time.time(), {},
                    FEATURES if k % 2 == 0 else wide)
            for i in range(20)
        ])
        for k in range(6)
    ]  # fmt: skip
    barrier = threading.Barrier(len(segments))
    errors: list[BaseException] = []

    def replica(k: int) -> None:
        store = PostgresStore(pg_dsn)
        try:
            barrier.wait(10)
            store.deliver(segments[k], f"replica-{k}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(len(segments))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [], [str(e) for e in errors]
    df = PostgresStore(pg_dsn).read_predictions(MODEL, None, None, None)
    assert len(df) == 6 * 20 * 2 and not df.duplicated(KEY).any()
    assert df.loc[df["version"] == 1, "worst_area"].isna().all()
    assert df.loc[df["version"] == 2, "worst_area"].notna().all()


def test_prune_drops_old_records_from_postgres_and_parquet(
    pg_dsn: str, tmp_path: Path, home: Path
) -> None:
    now = time.time()
    old, new = now - 40 * 86400, now - 60
    x = np.ones((2, 3))
    blobs = [
        _record("old", 1, x, old, {}),
        _record("new", 1, x, new, {}),
        encode_rejected(
            RejectedRecord("old-bad", old, MODEL, "1", "v1_predict", 422, "e", b""), "e", ""
        ),
        encode_rejected(
            RejectedRecord("new-bad", new, MODEL, "1", "v1_predict", 422, "e", b""), "e", ""
        ),
        encode_feedback(MODEL, old, [("old", 0, "benign")]),
        encode_feedback(MODEL, new, [("new", 1, "benign")]),
    ]
    frames = _frames(tmp_path, blobs)
    PostgresStore(pg_dsn).deliver(frames, "s")
    ParquetStore(tmp_path / "parquet").deliver(frames, "s")
    cutoff = datetime.fromtimestamp(now - 30 * 86400, UTC)
    assert prune_store(_settings(home, pg_dsn), cutoff) == {
        "predictions": 2,
        "rejected": 1,
        "feedback": 1,
    }
    assert prune_store(_settings(home, str(tmp_path / "parquet")), cutoff) == {"partitions": 3}
    PostgresStore(pg_dsn).deliver(frames, "s")  # once more, now through the command
    env = {"VIGIL_LOG_STORE": pg_dsn, "VIGIL_MODEL_STORE": str(home / "models"),
           "VIGIL_DATA_DIR": str(home / "data")}  # fmt: skip
    result = CliRunner().invoke(cli, ["logs", "prune", "--older-than", "30d"], env=env)
    assert result.exit_code == 0, result.output
    for store in (pg_dsn, str(tmp_path / "parquet")):
        settings = _settings(home, store)
        df = read_predictions(settings, MODEL)
        assert df["request_id"].unique().tolist() == ["new"]
        assert df["label"].tolist() == [None, "benign"]
        assert read_rejected(settings)["request_id"].tolist() == ["new-bad"]


# -- live service ----------------------------------------------------------------------------
def test_served_predictions_and_feedback_land_in_postgres(
    vigil_server: Callable[..., VigilServer],
    home: Path,
    pg_dsn: str,
    rows: list[dict[str, float]],
) -> None:
    server = vigil_server(env=_env(pg_dsn))
    sent: dict[str, tuple[list[dict[str, float]], dict[str, Any]]] = {}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for i in range(6):
            batch = rows[i * 3 : i * 3 + 3]
            path = f"/v1/models/{MODEL}" + ("/versions/2" if i % 2 else "") + "/predict"
            r = c.post(
                path,
                json={"instances": batch, "metadata": {"customer": f"c{i}"}},
                headers={"X-Request-ID": f"e2e-{i}"},
            )
            assert r.status_code == 200, r.text
            sent[f"e2e-{i}"] = (batch, r.json())
        labels = [
            {"request_id": "e2e-0", "row": 1, "label": "benign"},
            {"request_id": "e2e-3", "row": 2, "label": "malignant"},
        ]
        assert c.post("/v1/feedback", json=labels).status_code == 200
    server.stop()  # SIGTERM: uvicorn re-raises it after a graceful shutdown
    # A clean stop delivers everything: with the spool empty, every row read comes from PostgreSQL.
    assert spool_segments(home / "data" / "spool") == []

    df = read_predictions(_settings(home, pg_dsn), MODEL)
    assert len(df) == 18 and not df.duplicated(KEY).any()
    assert df["received_at"].dt.tz is not None and df["request_id"].map(type).eq(str).all()
    for rid, (batch, answer) in sent.items():
        got = df[df["request_id"] == rid].sort_values("row")
        assert got["row"].tolist() == [0, 1, 2]
        assert (got["version"] == answer["version"]).all()
        assert got["endpoint"].eq("v1_predict").all() and got["status"].eq(200).all()
        for name in batch[0]:
            assert got[name].dtype == np.float64
            assert got[name].tolist() == [r[name] for r in batch]  # exact, not approximate
        predicted = answer["predictions"]
        assert got["prediction"].tolist() == [p["label"] for p in predicted]
        for cls in CLASSES:
            expected = np.array([p["probabilities"][cls] for p in predicted], np.float32)
            assert np.array_equal(got[f"proba_{cls}"].to_numpy(np.float32), expected)
        assert got["metadata"].map(orjson.loads).tolist() == [{"customer": f"c{rid[-1]}"}] * 3
    labelled = df.dropna(subset=["label"])
    assert labelled[[*KEY, "label"]].values.tolist() == [
        ["e2e-0", 1, "benign"],
        ["e2e-3", 2, "malignant"],
    ]


class _Load:
    """Concurrent clients sending unique request ids; remembers which were acknowledged."""

    def __init__(self, url: str, rows: list[dict[str, float]], clients: int = 4) -> None:
        self.url, self.rows = url, rows
        self.acked: dict[str, int] = {}
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as c:
            n = 0
            while not self._stop.is_set():
                n += 1
                rid = f"load-{client}-{n}-{uuid.uuid4().hex[:6]}"
                size = 1 + n % 3
                body = {"instances": self.rows[n % 50 : n % 50 + size]}
                try:
                    r = c.post(
                        f"/v1/models/{MODEL}/predict", json=body, headers={"X-Request-ID": rid}
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.refused.append(f"{rid}: {exc!r}")
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.acked[rid] = size
                    else:
                        self.refused.append(f"{rid}: {r.status_code} {r.text[:200]}")

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


def _wait_until_stored(dsn: str, acked: dict[str, int], timeout: float = 30) -> pd.DataFrame:
    """Poll PostgreSQL itself (not the spool) until every acknowledged request is there."""
    deadline = time.monotonic() + timeout
    while True:
        df = PostgresStore(dsn).read_predictions(MODEL, None, None, None)
        stored = set(df["request_id"]) if not df.empty else set()
        missing = acked.keys() - stored
        if not missing:
            return df
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} acknowledged requests never reached PostgreSQL")
        time.sleep(0.3)


def _assert_exactly_once(df: pd.DataFrame, acked: dict[str, int]) -> None:
    assert not df.duplicated(KEY).any()
    rows = df.groupby("request_id")["row"].agg(["count", "max"])
    for rid, size in acked.items():
        assert (rows.loc[rid, "count"], rows.loc[rid, "max"]) == (size, size - 1), rid


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_postgres_outage_under_load_loses_nothing(
    vigil_server: Callable[..., VigilServer],
    pg_server: PgServer,
    pg_dsn: str,
    rows: list[dict[str, float]],
) -> None:
    server = vigil_server(env=_env(pg_dsn))
    with _Load(server.url, rows) as load:
        _wait(lambda: load.count() >= 30, 30, "load before the outage")
        pg_server.stop()
        down = time.monotonic()
        try:
            before = load.count()
            _wait(
                lambda: _metric(server.url, "vigil_iolog_failures_total", '{stage="deliver"}') > 0,
                10,
                "a failed delivery",
            )
            _wait(
                lambda: load.count() >= before + 30, 15, "requests served while PostgreSQL is down"
            )
            assert _metric(server.url, "vigil_iolog_backlog_bytes") > 0  # waiting in the spool
            assert _metric(server.url, "vigil_iolog_healthy") == 1  # spool fine: keep serving
            time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))  # several failed retries
        finally:
            pg_server.start()
        after = load.count()
        _wait(lambda: load.count() >= after + 20, 15, "load after PostgreSQL returned")
    assert load.refused == []  # every request got its 200 throughout the outage
    _assert_exactly_once(_wait_until_stored(pg_dsn, load.acked), load.acked)
    _wait(lambda: _metric(server.url, "vigil_iolog_backlog_bytes") == 0, 10, "empty backlog")


def test_sigkill_under_load_with_postgres_loses_nothing(
    vigil_server: Callable[..., VigilServer],
    pg_dsn: str,
    rows: list[dict[str, float]],
) -> None:
    server = vigil_server(env=_env(pg_dsn))
    with _Load(server.url, rows) as load:
        _wait(lambda: load.count() >= 60, 30, "load before the kill")
        server.kill()
    assert load.acked
    vigil_server(env=_env(pg_dsn))  # the new process takes over the dead one's spool
    _assert_exactly_once(_wait_until_stored(pg_dsn, load.acked), load.acked)


def test_a_table_from_before_roles_is_migrated_and_keeps_shadow_rows(
    pg_dsn: str, tmp_path: Path
) -> None:
    """A predictions table keyed on (request_id, row) gains ``role`` (old rows: primary) and the
    wider key, so a shadow row and its primary row are both stored and read back."""
    name = predictions_table_name(MODEL)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
    store = PostgresStore(pg_dsn)
    now = time.time()
    store.deliver(_frames(tmp_path, [_record("old", 1, np.ones((1, 3)), now, {})]), "old")
    store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as an older Vigil made it
        conn.execute(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_pkey"')
        conn.execute(f'ALTER TABLE "{name}" DROP COLUMN role')
        conn.execute(f'ALTER TABLE "{name}" ADD PRIMARY KEY (request_id, "row")')
    x = np.ones((2, 3))
    record = IORecord(
        "pair", now + 1, MODEL, 1, "sha-1", "v1_predict", 200, 0.002, FEATURES, x, CLASSES,
        np.zeros(2, "i4"), np.full((2, 2), 0.5, "f4"), {},
    )  # fmt: skip
    shadow = IORecord(
        "pair", now + 1, MODEL, 2, "sha-2", "v1_predict", 500, 0.002, FEATURES, x, CLASSES,
        np.zeros(2, "i4"), np.full((2, 2), np.nan, "f4"), {}, role="shadow",
    )  # fmt: skip
    blobs = []
    for r in (record, shadow):
        schema = Schema.build(r, None)
        blobs.append(schema.frame() + encode_prediction(r, schema, None))
    store = PostgresStore(pg_dsn)
    for _ in range(2):  # redelivery adds nothing
        store.deliver(_frames(tmp_path, blobs), "pair")
    df = store.read_predictions(MODEL, None, None, None)
    store.close()
    roles = sorted(zip(df["request_id"], df["row"], df["role"], strict=True))
    assert roles == [("old", 0, "primary"), ("pair", 0, "primary"), ("pair", 0, "shadow"),
                     ("pair", 1, "primary"), ("pair", 1, "shadow")]  # fmt: skip
    failed = df[df["role"] == "shadow"]
    assert set(failed["status"]) == {500} and failed["prediction"].isna().all()
