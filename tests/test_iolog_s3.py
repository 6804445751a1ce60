"""The object-store log store against a real S3-compatible server (moto's) on loopback.

The service talks S3 over HTTP with pyarrow's client; nothing is patched in process.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from typer.testing import CliRunner

from service.cli.main import app as cli
from service.errors import LogStoreError
from service.iolog.compaction import CompactionBusy, Lease, compact
from service.iolog.frames import encode_feedback, encode_rejected
from service.iolog.manifests import MANIFEST_PREFIX, resolve
from service.iolog.parquet_store import ParquetStore
from service.iolog.reader import (
    CorruptLogFile,
    open_predictions,
    read_feedback,
    read_predictions,
    read_rejected,
)
from service.iolog.record import RejectedRecord
from service.iolog.s3_store import S3Store, open_s3_store
from service.iolog.store import open_store
from service.settings import Settings
from tests import s3server
from tests.conftest import MODEL
from tests.load import LoadResult, run_load
from tests.s3server import SECRET_KEY, MotoServer
from tests.servers import free_port, start_vigil
from tests.test_iolog_postgres import _frames, _metric, _record, _wait

moto_server = s3server.moto_server
s3_env = s3server.s3_env
KEY = ["request_id", "row"]


def _settings(home: Path, env: dict[str, str]) -> Settings:
    return Settings(
        model_store=home / "models",
        data_dir=home / "data",
        log_store=env["VIGIL_LOG_STORE"],
        s3_endpoint_url=env["VIGIL_S3_ENDPOINT_URL"],
        s3_region="us-east-1",
        s3_timeout_s=2,
    )


def _keys(store: S3Store) -> list[str]:
    infos = store.fs.get_file_info(pafs.FileSelector(store.base, recursive=True))
    return sorted(i.path[len(store.base) + 1 :] for i in infos if i.type == pafs.FileType.File)


def _segments(
    tmp_path: Path, n: int, per: int = 3, at: float | None = None, tag: str = "s"
) -> list[list]:  # type: ignore[type-arg]
    rng = np.random.default_rng(n)
    at = time.time() if at is None else at
    return [
        _frames(
            tmp_path,
            [_record(f"{tag}{s}-r{i}", 1, rng.normal(size=(2, 3)), at + i, {}) for i in range(per)],
        )
        for s in range(n)
    ]


def _stored_rows(store: ParquetStore, version: int | None = None) -> pa.Table:
    """What the store itself serves (without the reader's de-duplication by key)."""
    sources = store.prediction_batches(MODEL, version, None, None, ["request_id", "row"])
    batches = [b.select(["request_id", "row"]) for s in sources for b in s.batches]
    return pa.Table.from_batches(batches) if batches else pa.table({"request_id": [], "row": []})


def _assert_unique(table: pa.Table) -> None:
    df = table.to_pandas()
    assert not df.duplicated(KEY).any()


# -- the store ---------------------------------------------------------------------------------
def test_the_s3_store_has_the_parquet_layout_and_a_redelivery_overwrites_itself(
    s3_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    settings = _settings(home, s3_env)
    store = open_store(settings)
    assert isinstance(store, S3Store)
    now = time.time()
    day = datetime.fromtimestamp(now, UTC).date().isoformat()
    frames = _frames(
        tmp_path,
        [
            _record("a", 1, np.ones((2, 3)), now, {"k": "v"}),
            _record("b", 2, np.ones((1, 3)), now, {}),
            encode_rejected(RejectedRecord("bad", now, MODEL, "1", "v1", 422, "e", b"x"), "e", "x"),
            encode_feedback(MODEL, now, [("a", 1, "benign")]),
        ],
    )
    for _ in range(2):  # a crash between the PUT and the spool cleanup delivers it again
        assert store.deliver(frames, "host-1-abc-seg-0001") == {
            "predictions": 3, "rejected": 1, "feedback": 1,
        }  # fmt: skip
    assert _keys(store) == [
        f"feedback/model={MODEL}/date={day}/part-host-1-abc-seg-0001.parquet",
        f"predictions/model={MODEL}/version=1/date={day}/part-host-1-abc-seg-0001.parquet",
        f"predictions/model={MODEL}/version=2/date={day}/part-host-1-abc-seg-0001.parquet",
        f"rejected/date={day}/part-host-1-abc-seg-0001.parquet",
    ]
    df = read_predictions(settings, MODEL)
    assert sorted(df["request_id"]) == ["a", "a", "b"] and not df.duplicated(KEY).any()
    assert df.loc[(df["request_id"] == "a") & (df["row"] == 1), "label"].tolist() == ["benign"]
    assert read_feedback(settings, MODEL)["label"].tolist() == ["benign"]
    assert read_rejected(settings)["request_id"].tolist() == ["bad"]
    # The same frames in a local Parquet store read back identically: one layout, one encoding.
    local = home / "local"
    ParquetStore(local).deliver(frames, "host-1-abc-seg-0001")
    same = read_predictions(settings.model_copy(update={"log_store": str(local)}), MODEL)
    cols = list(df.columns)
    assert (
        df[cols]
        .sort_values(KEY)
        .reset_index(drop=True)
        .equals(same[cols].sort_values(KEY).reset_index(drop=True))
    )
    # Retention removes whole days, as on disk.
    assert store.prune(datetime.now(UTC) + timedelta(days=2)) == {"partitions": 4}
    assert _keys(store) == []


def test_a_one_day_read_lists_only_that_model_version_and_day(
    s3_env: dict[str, str], home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.iolog import manifests, parquet_store

    store = open_s3_store(_settings(home, s3_env))
    base = datetime(2026, 1, 10, tzinfo=UTC).timestamp()
    for d in range(3):
        store.deliver(_segments(tmp_path, 1, at=base + d * 86400)[0], f"seg-{d}")
    listed: list[str] = []
    subdirs, resolve_ = parquet_store._subdirs, manifests.resolve

    def spy_subdirs(fs: pafs.FileSystem, parent: str, prefix: str) -> list[str]:
        listed.append(parent[len(store.base) + 1 :])
        return subdirs(fs, parent, prefix)

    def spy_resolve(fs: pafs.FileSystem, partition: str) -> manifests.Resolution:
        listed.append(partition[len(store.base) + 1 :])
        return resolve_(fs, partition)

    monkeypatch.setattr(parquet_store, "_subdirs", spy_subdirs)
    monkeypatch.setattr(manifests, "resolve", spy_resolve)
    day = datetime(2026, 1, 11, tzinfo=UTC)
    (source,) = store.prediction_batches(MODEL, 1, day, day + timedelta(hours=1))
    assert sum(b.num_rows for b in source.batches) == 6  # that day's segment only
    assert listed == [
        f"predictions/model={MODEL}",
        f"predictions/model={MODEL}/version=1",
        f"predictions/model={MODEL}/version=1/date=2026-01-11",
    ]


def test_a_read_gets_each_object_twice_and_never_heads_it(
    s3_env: dict[str, str], home: Path, tmp_path: Path, moto_server: MotoServer
) -> None:
    # Each request is a round trip to the store: the footer once (for the window's schema and
    # kept for the scan), the data once; the listing's sizes spare the HEAD an open by path costs.
    settings = _settings(home, s3_env)
    store = open_s3_store(settings)
    for s, frames in enumerate(_segments(tmp_path, 3)):
        store.deliver(frames, f"seg-{s}")
    before = len(moto_server.log_path.read_bytes().splitlines())
    assert len(read_predictions(settings, MODEL, with_labels=False)) == 18
    bucket = s3_env["VIGIL_LOG_STORE"].removeprefix("s3://").split("/")[0]
    requests: dict[tuple[str, str], int] = {}
    for line in moto_server.log_path.read_text().splitlines()[before:]:
        hit = re.search(r"(GET|HEAD) /" + bucket + r"/(\S*/predictions/\S*\.parquet) ", line)
        if hit:
            requests[hit[1], hit[2]] = requests.get((hit[1], hit[2]), 0) + 1
    objects = {path for _, path in requests}
    assert len(objects) == 3
    assert {requests.get(("GET", p)) for p in objects} == {2}
    assert not any(method == "HEAD" for method, _ in requests)


def test_a_file_deleted_after_the_listing_is_named_with_the_reason(
    s3_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    settings = _settings(home, s3_env)
    store = open_s3_store(settings)
    for s, frames in enumerate(_segments(tmp_path, 2)):
        store.deliver(frames, f"seg-{s}")
    stream = open_predictions(settings, MODEL, with_labels=False)  # listed, footers read
    (gone,) = [k for k in _keys(store) if k.endswith("part-seg-1.parquet")]
    store.fs.delete_file(store.path(gone))
    with pytest.raises(CorruptLogFile, match=r"part-seg-1\.parquet.*merged and deleted"):
        list(stream)


def test_unknown_bucket_or_unreachable_endpoint_is_a_clear_error_without_credentials(
    s3_env: dict[str, str], home: Path, moto_server: MotoServer
) -> None:
    settings = _settings(home, s3_env)
    wrong = [
        (settings.model_copy(update={"log_store": "s3://no-such-bucket-x/p"}), "no-such-bucket-x"),
        (settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"}), "not writable"),
    ]
    for bad, reason in wrong:
        with pytest.raises(LogStoreError, match=reason) as info:
            open_s3_store(bad).check()
        assert SECRET_KEY not in str(info.value) and s3server.ACCESS_KEY not in str(info.value)
        assert not open_s3_store(bad).ping()
    open_s3_store(settings).check()  # the right one passes

    # Readers say so too: `vigil logs export` on an unreachable store fails in one line.
    unreachable = {"VIGIL_S3_ENDPOINT_URL": "http://127.0.0.1:9", "VIGIL_S3_MAX_ATTEMPTS": "1",
                   "VIGIL_DATA_DIR": str(home / "data"), "COLUMNS": "300"}  # fmt: skip
    out = home / "x.parquet"
    result = CliRunner().invoke(
        cli, ["logs", "export", "--model", MODEL, "--out", str(out)], env=unreachable
    )
    assert result.exit_code == 1 and "cannot be read" in result.output, result.output
    assert SECRET_KEY not in result.output and not out.exists()

    # `vigil serve` refuses to start on it, saying why, instead of dropping records later.
    env = {**s3_env, "VIGIL_MODEL_STORE": str(home / "models"), "VIGIL_DATA_DIR": str(home / "d"),
           "VIGIL_LOG_STORE": "s3://no-such-bucket-x/p", "VIGIL_PORT": "1"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"], env={**_base_env(), **env},
        capture_output=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 1, output
    assert "bucket 'no-such-bucket-x' not found" in output
    assert SECRET_KEY not in output


def test_refused_credentials_are_a_clear_error_without_them(
    moto_server: MotoServer, home: Path, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    # A second server that checks credentials (moto's IAM emulation, no user known): every key
    # is refused, as a real store refuses a wrong one.
    strict = MotoServer(moto_server.python, free_port(), tmp_path / "moto-auth.log",
                        env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # fmt: skip
    strict.start()
    try:
        settings = _settings(home, {**s3_env, "VIGIL_S3_ENDPOINT_URL": strict.endpoint})
        with pytest.raises(LogStoreError, match="ACCESS_DENIED") as info:
            open_s3_store(settings).check()
        assert SECRET_KEY not in str(info.value) and s3server.ACCESS_KEY not in str(info.value)
    finally:
        strict.stop()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "AWS_"))}


# -- compaction --------------------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, home: Path) -> ParquetStore:
    if request.param == "local":
        return ParquetStore(home / "iolog")
    env = request.getfixturevalue("s3_env")
    return open_s3_store(_settings(home, env))


def test_compaction_merges_a_partition_into_files_of_the_target_size(
    any_store: ParquetStore, tmp_path: Path
) -> None:
    store = any_store
    for i, frames in enumerate(_segments(tmp_path, 12)):
        store.deliver(frames, f"h-{i:03d}")
    before = _stored_rows(store)
    assert before.num_rows == 72
    done = compact(store, timedelta(0), target_bytes=10**9, grace=timedelta(0))
    assert (done.files_in, done.files_out, done.rows) == (12, 1, 72)
    after = _stored_rows(store)
    assert sorted(after.to_pylist(), key=str) == sorted(before.to_pylist(), key=str)
    (partition,) = [p for p in done.per_partition if p.startswith("predictions/")]
    assert done.per_partition[partition] == 1
    names = sorted(resolve(store.fs, f"{store.base}/{partition}").files)
    assert len(names) == 2 and names[0].startswith(MANIFEST_PREFIX)  # the output and its manifest
    # Later deliveries add files that the next run merges with the compacted one's neighbours;
    # a file already of the target size is left alone.
    for i, frames in enumerate(_segments(tmp_path, 3, tag="late")):
        store.deliver(frames, f"late-{i}")
    again = compact(store, timedelta(0), target_bytes=10**9, grace=timedelta(0))
    assert again.files_out == 1 and _stored_rows(store).num_rows == 90
    assert again.per_partition[partition] == 1
    _assert_unique(_stored_rows(store))
    # --older-than: files younger than it stay as delivered.
    store.deliver(_segments(tmp_path, 1, tag="fresh")[0], "fresh")
    assert compact(store, timedelta(hours=1), grace=timedelta(0)).files_in == 0


def test_a_held_lease_stops_a_second_compactor(any_store: ParquetStore) -> None:
    holder = Lease(any_store)
    holder.acquire()
    with pytest.raises(CompactionBusy, match="holds the lease"):
        compact(any_store, timedelta(0))
    holder.release()
    compact(any_store, timedelta(0))  # free again


def test_vigil_logs_compact_on_s3(s3_env: dict[str, str], home: Path, tmp_path: Path) -> None:
    store = open_s3_store(_settings(home, s3_env))
    for i, frames in enumerate(_segments(tmp_path, 4)):
        store.deliver(frames, f"h-{i}")
    runner = CliRunner()
    env = {"VIGIL_DATA_DIR": str(home / "data"), "COLUMNS": "200"}
    bad = runner.invoke(cli, ["logs", "compact", "--older-than", "soon"], env=env)
    assert bad.exit_code == 2 and "not a duration" in bad.output
    holder = Lease(store)
    holder.acquire()
    busy = runner.invoke(cli, ["logs", "compact", "--older-than", "0s"], env=env)
    assert busy.exit_code == 1 and "holds the lease" in busy.output
    holder.release()
    done = runner.invoke(cli, ["logs", "compact", "--older-than", "0s", "--grace", "0s"], env=env)
    assert done.exit_code == 0, done.output
    assert "compacted 4 files into 1 in 1 partitions (24 rows" in done.output
    assert "s3://" in done.output and SECRET_KEY not in done.output
    assert _stored_rows(store).num_rows == 24


def test_compaction_under_delivery_and_reading_never_loses_or_doubles_a_row(
    any_store: ParquetStore, tmp_path: Path
) -> None:
    store = any_store
    segments = _segments(tmp_path, 60, per=2)
    delivered = [0]  # rows whose deliver() returned
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, int, int]] = []  # (delivered before, read, delivered after)

    def deliver() -> None:
        for i, frames in enumerate(segments):
            store.deliver(frames, f"w-{i:03d}")
            delivered[0] += 4
            time.sleep(0.02)

    def read() -> None:
        while not stop.is_set():
            low = delivered[0]
            table = _stored_rows(store)
            seen.append((low, table.num_rows, delivered[0]))
            _assert_unique(table)

    def compactor() -> None:
        while not stop.is_set():
            compact(store, timedelta(0), target_bytes=1_000_000, grace=timedelta(seconds=2))

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (read, compactor)]
    for t in threads:
        t.start()
    guarded(deliver)()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(seen) > 5
    for low, rows, high in seen:  # every delivered row once: never fewer, never more
        assert low <= rows <= high + 4, (low, rows, high)
    counts = [rows for _, rows, _ in seen]
    assert all(b >= a for a, b in itertools.pairwise(counts)), counts
    time.sleep(2.1)
    final = compact(store, timedelta(0), target_bytes=1_000_000, grace=timedelta(0))
    assert _stored_rows(store).num_rows == 240
    assert all(n == 1 for p, n in final.per_partition.items() if p.startswith("predictions/"))
    for p in final.per_partition:
        if p.startswith("predictions/"):
            left = resolve(store.fs, f"{store.base}/{p}").files
            assert len(left) == 2, sorted(left)  # the merged file and its manifest


# -- live services -----------------------------------------------------------------------------
OUTAGE_S = float(os.environ.get("VIGIL_TEST_S3_OUTAGE_S", "30"))


def _serve_env(s3_env: dict[str, str]) -> dict[str, str]:
    # Short intervals so that delivery (and retry while the store is away) happens within tests.
    return {**s3_env, "VIGIL_COMPACT_INTERVAL_S": "0.2", "VIGIL_SPOOL_SEGMENT_SECONDS": "0.3"}


def _replica_home(home: Path, name: str) -> Path:
    other = home / name
    other.mkdir()
    shutil.copytree(home / "models", other / "models")
    return other


def _wait_until_stored(store: ParquetStore, acked: dict[str, int], timeout: float = 60) -> pa.Table:
    """Poll the bucket itself (not a spool) until every acknowledged request is there."""
    deadline = time.monotonic() + timeout
    while True:
        table = _stored_rows(store)
        missing = acked.keys() - set(table.column("request_id").to_pylist())
        if not missing:
            return table
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} acknowledged requests never reached the bucket")
        time.sleep(0.5)


def _assert_exactly_once(table: pa.Table, acked: dict[str, int]) -> None:
    df = table.to_pandas()
    assert not df.duplicated(KEY).any()
    rows = df.groupby("request_id")["row"].agg(["count", "max"])
    for rid, size in acked.items():
        assert (rows.loc[rid, "count"], rows.loc[rid, "max"]) == (size, size - 1), rid


@pytest.mark.slow
def test_two_replicas_on_one_bucket_and_a_sigkill_lose_nothing(
    s3_env: dict[str, str], home: Path, rows: list[dict[str, float]]
) -> None:
    homes = [_replica_home(home, "a"), _replica_home(home, "b")]
    servers = [start_vigil(h, _serve_env(s3_env)) for h in homes]
    try:
        stop = threading.Event()
        results: list[LoadResult] = []

        def load(url: str) -> None:
            results.append(run_load(url, rows, threads=3, seconds=60, stop=stop))

        pool = [threading.Thread(target=load, args=(s.url,)) for s in servers]
        for t in pool:
            t.start()
        time.sleep(4)
        servers[0].kill()  # SIGKILL mid-load: its spool holds acknowledged, undelivered records
        time.sleep(2)
        stop.set()
        for t in pool:
            t.join(60)
        servers[0] = start_vigil(homes[0], _serve_env(s3_env))  # takes over the dead one's spool
        acked = {rid: n for r in results for rid, n in r.ok.items()}
        assert len(acked) > 50
        store = open_s3_store(_settings(home, s3_env))
        _assert_exactly_once(_wait_until_stored(store, acked), acked)
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        assert SECRET_KEY not in s.log()


@pytest.mark.slow
def test_an_object_store_outage_under_load_loses_nothing(
    s3_env: dict[str, str], home: Path, moto_server: MotoServer, rows: list[dict[str, float]]
) -> None:
    server = start_vigil(home, _serve_env(s3_env))
    store = open_s3_store(_settings(home, s3_env))
    try:
        stop = threading.Event()
        results: list[LoadResult] = []
        loader = threading.Thread(
            target=lambda: results.append(
                run_load(server.url, rows, threads=3, seconds=OUTAGE_S + 60, stop=stop)
            )
        )
        loader.start()
        time.sleep(2)
        moto_server.freeze()
        try:
            _wait(lambda: _metric(server.url, "vigil_iolog_failures_total", '{stage="deliver"}') > 0,
                  OUTAGE_S + 15, "a failed delivery")  # fmt: skip
            _wait(lambda: _metric(server.url, "vigil_iolog_backlog_bytes") > 0, 15, "a backlog")
            ready = httpx.get(server.url + "/v2/health/ready", timeout=5)
            assert ready.status_code == 200  # the spool takes the records: keep serving
            assert _metric(server.url, "vigil_iolog_healthy") == 1
            time.sleep(max(0.0, OUTAGE_S - 5))
        finally:
            moto_server.thaw()
        time.sleep(3)
        stop.set()
        loader.join(60)
        (result,) = results
        assert set(result.statuses) == {200} and result.connection_errors == 0
        _assert_exactly_once(_wait_until_stored(store, result.ok), result.ok)
        _wait(lambda: _metric(server.url, "vigil_iolog_backlog_bytes") == 0, 30, "empty backlog")
    finally:
        moto_server.thaw()
        server.stop()
    assert SECRET_KEY not in server.log()
