"""Streaming readers: export, drift and the PostgreSQL reader give what a full load gave, read the
window's partitions only, and count a record in both spool and store once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from monitoring.drift.job import run_drift
from monitoring.drift.window import Sampler
from service.cli.main import app as cli
from service.iolog import parquet_store
from service.iolog.frames import Frame, Schema, encode_feedback, encode_prediction, read_frames
from service.iolog.parquet_store import ParquetStore
from service.iolog.postgres_store import PostgresStore
from service.iolog.reader import CorruptLogFile, open_predictions, read_predictions
from service.iolog.record import IORecord
from service.iolog.schema import feedback_table, group_frames, predictions_table
from service.settings import Settings
from tests import pgserver
from tests.conftest import MODEL

pg_server = pgserver.pg_server
pg_dsn = pgserver.pg_dsn
KEY = ["request_id", "row"]
CLASSES = ("malignant", "benign")
DAY1 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
DAY2 = DAY1 + 86400
_SEGMENTS = itertools.count()


def _record(rid: str, version: int, at: float, features: tuple[str, ...], rows: int = 3) -> bytes:
    rng = np.random.default_rng(abs(hash((rid, version))) % 2**32)
    x = rng.normal(size=(rows, len(features)))
    p1 = rng.random(rows)
    record = IORecord(
        rid, at, MODEL, version, f"sha-{version}", "v1_predict", 200, 0.002, features, x,
        CLASSES, (p1 > 0.5).astype("i4"), np.column_stack([1 - p1, p1]).astype("f4"),
        {"session": rid},
    )  # fmt: skip
    schema = Schema.build(record, None)
    return schema.frame() + encode_prediction(record, schema, None)


def _write_segment(directory: Path, blobs: list[bytes]) -> list[Frame]:
    directory.mkdir(parents=True, exist_ok=True)
    # Named in writing order, as the spool names them: readers go through segments in name order.
    seg = directory / f"seg-{next(_SEGMENTS):08d}.seg"
    seg.write_bytes(b"".join(blobs))
    return list(read_frames(seg))


def _full_load(frames: list[Frame], since: datetime, until: datetime) -> pd.DataFrame:
    """What the readers returned before they streamed: every frame loaded, then filtered."""
    preds, _, fb = group_frames(frames)
    parts = []
    for (_m, v, _d), group in preds.items():
        df = predictions_table(group).to_pandas()
        df.insert(3, "model", MODEL)
        df.insert(4, "version", v)
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    df = df[(df["received_at"] >= pd.Timestamp(since)) & (df["received_at"] < pd.Timestamp(until))]
    df = df.drop_duplicates(KEY)
    labels = pd.concat([feedback_table(g).to_pandas() for g in fb.values()], ignore_index=True)
    labels = labels.sort_values("received_at", kind="stable").drop_duplicates(KEY, keep="last")
    return df.merge(labels[[*KEY, "label"]], on=KEY, how="left")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    df = df.sort_values(KEY).reset_index(drop=True)
    return df.astype(object).where(df.notna(), None)


@pytest.fixture
def logged(settings: Settings) -> list[Frame]:
    """Three delivered segments over two days and two versions (v2 logs one more feature), one
    segment still in the spool, and one delivered segment not yet removed from the spool."""
    v1, v2 = ("f_a", "f_b"), ("f_a", "f_b", "f_c")
    store = ParquetStore(Path(settings.log_store_url))
    spool = settings.spool_dir / "worker-1"
    segments = [
        [_record(f"a{i}", 1, DAY1 + 3600 * i, v1) for i in range(6)],
        [_record(f"b{i}", 2, DAY1 + 43200 + 3600 * i, v2) for i in range(6)]
        + [encode_feedback(MODEL, DAY2, [("a1", 0, "benign"), ("b2", 1, "malignant")])],
        [_record(f"c{i}", 1, DAY2 + 600 * i, v1) for i in range(6)]
        + [encode_feedback(MODEL, DAY2 + 10, [("a1", 0, "malignant")])],  # later label wins
    ]
    frames: list[Frame] = []
    for i, blobs in enumerate(segments):
        got = _write_segment(spool if i == 2 else settings.data_dir / "delivered", blobs)
        store.deliver(got, f"seg-{i}")  # the third one is delivered and still spooled
        frames += got
    frames += _write_segment(
        spool,
        [_record(f"s{i}", 2, DAY2 + 7200 + i, v2) for i in range(4)]
        + [encode_feedback(MODEL, DAY2 + 20, [("s0", 2, "benign")])],
    )
    return frames


def test_export_equals_the_full_load_and_counts_spooled_records_once(
    settings: Settings, logged: list[Frame], tmp_path: Path
) -> None:
    since = datetime.fromtimestamp(DAY1 + 3 * 3600, UTC)
    until = datetime.fromtimestamp(DAY2 + 7200 + 3, UTC)
    expected = _full_load(logged, since, until)
    assert len(expected) == 3 * (3 + 6 + 6 + 3)  # some of day 1 and of the spool fall outside
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    for suffix in ("parquet", "csv"):
        out = tmp_path / f"export.{suffix}"
        res = CliRunner().invoke(
            cli, ["logs", "export", "--model", MODEL, *window, "--out", str(out)], env=env
        )
        assert res.exit_code == 0, res.output
        assert f"exported {len(expected)} rows (2 labelled)" in res.output
        if suffix == "csv":
            back = pd.read_csv(out, parse_dates=["received_at"])
            assert len(back) == len(expected) and back["received_at"].dt.tz is not None
            continue
        back = pd.read_parquet(out)
        assert list(back.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(_sorted(back), _sorted(expected))
        labels = back.set_index(KEY)["label"]
        assert labels[("b2", 1)] == "malignant" and labels[("s0", 2)] == "benign"


def test_batches_are_bounded_and_read_the_same_rows(
    settings: Settings, logged: list[Frame]
) -> None:
    small = open_predictions(settings, MODEL, batch_rows=4)
    batches = list(small)
    assert len(batches) > 5 and all(b.num_rows <= 4 for b in batches[:-1])
    assert all(b.schema == small.schema for b in batches)
    whole = read_predictions(settings, MODEL)
    streamed = pa.Table.from_batches(batches).to_pandas()
    pd.testing.assert_frame_equal(_sorted(streamed), _sorted(whole))
    assert whole[KEY].duplicated().sum() == 0 and len(whole) == 3 * 22
    assert whole.set_index(KEY)["label"][("a1", 0)] == "malignant"  # the later label wins


def test_a_window_of_one_model_and_day_opens_no_other_partition(
    settings: Settings, logged: list[Frame]
) -> None:
    root = Path(settings.log_store_url) / "predictions"
    for other in (
        root / f"model={MODEL}" / "version=1" / "date=2026-03-05",  # another day
        root / f"model={MODEL}" / "version=2" / "date=2026-03-01",  # another version
        root / "model=other" / "version=1" / "date=2026-03-01",  # another model
    ):
        other.mkdir(parents=True, exist_ok=True)
        (other / "part-broken.parquet").write_bytes(b"not parquet at all")
    day = datetime.fromtimestamp(DAY1, UTC)
    df = read_predictions(settings, MODEL, 1, day, day + timedelta(days=1))
    assert sorted(set(df["request_id"])) == [f"a{i}" for i in range(6)]
    with pytest.raises(CorruptLogFile, match=r"date=2026-03-05/part-broken\.parquet"):
        read_predictions(settings, MODEL, 1, day, day + timedelta(days=7))
    out = settings.data_dir / "week.parquet"
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    week = ["--since", day.isoformat(), "--until", (day + timedelta(days=7)).isoformat()]
    res = CliRunner().invoke(cli, ["logs", "export", "--model", MODEL, *week, "--out", str(out)],
                             env=env)  # fmt: skip
    assert res.exit_code == 1 and "part-broken.parquet" in res.output.replace("\n", "")
    assert not out.exists() and not list(settings.data_dir.glob(".week*"))  # no partial file


def test_a_window_of_more_files_than_footers_kept_reads_every_file_once(
    settings: Settings, tmp_path: Path
) -> None:
    # Footers read for the window's schema are kept for the first files only (memory): the
    # files after them are opened again, and all come in file order.
    store = ParquetStore(Path(settings.log_store_url))
    n = parquet_store._FOOTERS_KEPT + 3
    for i in range(n):
        blob = _record(f"r{i:04d}", 1, DAY1 + i, ("f_a",), rows=1)
        store.deliver(_write_segment(tmp_path / "segments", [blob]), f"seg-{i:04d}")
    stream = open_predictions(settings, MODEL, 1, with_labels=False)
    ids = [i for b in stream for i in b.column("request_id").to_pylist()]
    assert ids == [f"r{i:04d}" for i in range(n)]


def test_drift_sample_is_bounded_and_does_not_depend_on_batching() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=5000), "label": None, "prediction": "benign"})
    frame.loc[::10, "label"] = "benign"
    whole, parts = Sampler(300, seed=7), Sampler(300, seed=7)
    whole.add(frame)
    for start in range(0, len(frame), 777):
        parts.add(frame.iloc[start : start + 777])
    a, b = whole.result(), parts.result()
    assert a.rows == b.rows == 5000 and len(a.sample) == 300
    pd.testing.assert_frame_equal(a.sample, b.sample)
    assert len(a.labelled) == len(b.labelled) == 500  # every labelled row, not a sample
    other = Sampler(300, seed=8)
    other.add(frame)
    assert not other.result().sample.equals(a.sample)


def test_drift_run_streams_a_window_into_a_capped_reproducible_sample(
    settings: Settings, demo: tuple[pd.DataFrame, np.ndarray, list[str]], tmp_path: Path
) -> None:
    x, _, names = demo
    features = tuple(x.columns)
    start = datetime.now(UTC) - timedelta(hours=2)
    blobs = []
    for i in range(0, 3000, 100):
        inputs = x.to_numpy()[np.arange(i, i + 100) % len(x)]
        record = IORecord(
            f"d{i}", start.timestamp() + i, MODEL, 1, "sha", "v1_predict", 200, 0.001, features,
            inputs, tuple(names), np.zeros(100, "i4"), np.full((100, 2), 0.5, "f4"), {},
        )  # fmt: skip
        schema = Schema.build(record, None)
        blobs.append(schema.frame() + encode_prediction(record, schema, None))
    frames = _write_segment(tmp_path / "seg", blobs)
    ParquetStore(Path(settings.log_store_url)).deliver(frames, "bench")
    capped = settings.model_copy(update={"drift_max_rows": 500})
    reports = [
        run_drift(capped, MODEL, start, start + timedelta(hours=1), tmp_path / f"r{i}")
        for i in range(2)
    ]
    first, second = (r.to_dict()["versions"][0] for r in reports)
    assert reports[0].rows == 3000 and first["sampled_rows"] == 500, reports[0].error
    assert first["features"] == second["features"]


@pytest.mark.postgres
def test_postgres_export_streams_the_same_rows_as_parquet(
    pg_dsn: str, settings: Settings, logged: list[Frame], tmp_path: Path
) -> None:
    delivered = [f for f in logged if f.header.get("id", "")[:1] != "s"]  # not the spool's
    PostgresStore(pg_dsn).deliver(delivered, "all")
    [stored] = PostgresStore(pg_dsn).prediction_batches(MODEL, None, None, None, batch_rows=2)
    assert len(list(stored.batches)) > 2  # COPY output parsed block by block, not in one piece
    env = {"VIGIL_MODEL_STORE": str(settings.model_store), "VIGIL_DATA_DIR": str(settings.data_dir)}
    outs = {}
    for name, store in (("pg", pg_dsn), ("parquet", settings.log_store_url)):
        outs[name] = tmp_path / f"{name}.parquet"
        res = CliRunner().invoke(
            cli, ["logs", "export", "--model", MODEL, "--out", str(outs[name])],
            env={**env, "VIGIL_LOG_STORE": store},
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    a, b = (pq.read_table(outs[n]).to_pandas() for n in ("pg", "parquet"))
    assert len(a) == 3 * 22  # the spool's records too, the doubly stored segment once
    pd.testing.assert_frame_equal(_sorted(a), _sorted(b))


@pytest.mark.parametrize(
    ("since", "until"),
    [(None, None), (DAY1 + 3 * 3600, DAY2 + 7200 + 3), (DAY2, None), (None, DAY2 - 1)],
)
def test_store_unique_counts_what_the_full_reader_counts(
    settings: Settings, logged: list[Frame], since: float | None, until: float | None
) -> None:
    """The console's quick count: the segment both delivered and still spooled counts once,
    and rows stored before the spool's first row are read without their keys."""
    start = None if since is None else datetime.fromtimestamp(since, UTC)
    end = None if until is None else datetime.fromtimestamp(until, UTC)
    expected = read_predictions(settings, MODEL, since=start, until=end)
    stream = open_predictions(
        settings, MODEL, since=start, until=end, with_labels=False, columns=["version"],
        store_unique=True,
    )  # fmt: skip
    got = pa.Table.from_batches(list(stream), stream.schema).to_pandas()
    assert len(got) == len(expected) > 0
    assert got["version"].value_counts().to_dict() == expected["version"].value_counts().to_dict()
    early = got["received_at"] < pd.Timestamp(DAY2, unit="s", tz="UTC")
    assert "request_id" not in got or got.loc[early, "request_id"].isna().all()


def test_store_unique_carries_no_labels(settings: Settings) -> None:
    with pytest.raises(ValueError, match="without labels"):
        open_predictions(settings, MODEL, store_unique=True)
