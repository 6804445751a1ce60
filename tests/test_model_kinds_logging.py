"""The I/O log for the new kinds in every store (Parquet, PostgreSQL, S3): categorical features
as strings with the PII policy applied, a regressor's prediction as float64, labels as strings."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from model_store.manifest import PiiPolicy
from service.iolog.frames import (
    Frame,
    PiiRules,
    Schema,
    encode_feedback,
    encode_prediction,
)
from service.iolog.parquet_store import ParquetStore
from service.iolog.postgres_store import PostgresStore, predictions_table_name
from service.iolog.reader import read_predictions
from service.iolog.record import IORecord
from service.iolog.store import open_store
from service.settings import Settings
from tests import pgserver, s3server
from tests.test_iolog_postgres import _frames, _na_as_none

pg_server = pgserver.pg_server
pg_dsn = pgserver.pg_dsn
moto_server = s3server.moto_server
s3_env = s3server.s3_env
MODEL = "mixed"
FEATURES = ("sex", "age_band", "bmi")
SEX = ["female", "male", "other"]
BAND = ["<40", "55+", "40-55"]
SECRET = b"pii-secret-for-tests"


def _mixed_record(rid: str, at: float, regression: bool) -> IORecord:
    x = np.empty((3, 3), dtype=object)
    x[:, 0], x[:, 1], x[:, 2] = SEX, BAND, [21.5, 30.25, 18.0]
    values = np.array([151.25, 75.5, 206.125]) if regression else None
    classes = () if regression else ("low", "high")
    proba = np.empty((3, 0), np.float32) if regression else np.full((3, 2), 0.5, np.float32)
    return IORecord(
        rid, at, MODEL, 1, "sha-mixed", "v1_predict", 200, 0.001, FEATURES, x, classes,
        np.zeros(3, np.int64), proba, {}, values=values, categorical=(0, 1),
    )  # fmt: skip


def _segment(tmp_path: Path, regression: bool, pii: PiiRules | None) -> list[Frame]:
    now = float(int(time.time()) - 60)
    blobs = []
    for i in range(2):
        record = _mixed_record(f"m{i}", now + i, regression)
        schema = Schema.build(record, pii)
        blobs.append(schema.frame() + encode_prediction(record, schema, pii))
    label = "140.5" if regression else "high"
    blobs.append(encode_feedback(MODEL, now + 5, [("m0", 1, label)]))
    return _frames(tmp_path, blobs)


def _settings(tmp_path: Path, log_store: str, s3_endpoint_url: str = "") -> Settings:
    return Settings(
        model_store=tmp_path / "models",
        data_dir=tmp_path / "data",
        log_store=log_store,
        s3_endpoint_url=s3_endpoint_url,
    )


def _check(df: pd.DataFrame, regression: bool) -> None:
    df = df.sort_values(["request_id", "row"]).reset_index(drop=True)
    assert df["sex"].tolist() == SEX * 2 and df["age_band"].tolist() == BAND * 2
    assert df["bmi"].dtype == np.float64
    if regression:
        assert df["prediction"].dtype == np.float64
        assert df["prediction"].tolist() == [151.25, 75.5, 206.125] * 2
        assert not any(c.startswith("proba_") for c in df.columns)
        assert df["label"].tolist()[1] == "140.5" and float(df["label"][1]) == 140.5
    else:
        assert df["prediction"].tolist() == ["low"] * 6 and "proba_high" in df.columns
        assert df["label"].tolist()[1] == "high"


@pytest.mark.parametrize("regression", [True, False], ids=["regressor", "classifier"])
def test_parquet_and_postgres_read_back_the_same_strings_and_floats(
    pg_dsn: str, tmp_path: Path, regression: bool
) -> None:
    frames = _segment(tmp_path, regression, None)
    ParquetStore(tmp_path / "parquet").deliver(frames, "s1")
    PostgresStore(pg_dsn).deliver(frames, "s1")
    pq = read_predictions(_settings(tmp_path, str(tmp_path / "parquet")), MODEL)
    pg = read_predictions(_settings(tmp_path, pg_dsn), MODEL)
    _check(pq, regression)
    _check(pg, regression)
    pd.testing.assert_frame_equal(_na_as_none(pq), _na_as_none(pg))
    with psycopg.connect(pg_dsn) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s",
                (predictions_table_name(MODEL),),
            ).fetchall()
        )
    assert types["sex"] == "text" and types["bmi"] == "double precision"


def test_s3_reads_back_the_same(s3_env: dict[str, str], tmp_path: Path) -> None:
    frames = _segment(tmp_path, True, None)
    settings = _settings(
        tmp_path, s3_env["VIGIL_LOG_STORE"], s3_endpoint_url=s3_env["VIGIL_S3_ENDPOINT_URL"]
    )
    open_store(settings).deliver(frames, "host-seg-1")
    _check(read_predictions(settings, MODEL), True)


def test_pii_hash_and_drop_apply_to_categorical_features(pg_dsn: str, tmp_path: Path) -> None:
    pii = PiiRules({"sex": PiiPolicy.HASH, "age_band": PiiPolicy.DROP}, {}, SECRET)
    frames = _segment(tmp_path, True, pii)
    ParquetStore(tmp_path / "parquet").deliver(frames, "s1")
    PostgresStore(pg_dsn).deliver(frames, "s1")
    for store in (str(tmp_path / "parquet"), pg_dsn):
        df = read_predictions(_settings(tmp_path, store), MODEL).sort_values(["request_id", "row"])
        assert "age_band" not in df.columns
        assert df["sex"].tolist() == [pii.digest(s) for s in SEX] * 2
    files = b"".join(p.read_bytes() for p in (tmp_path / "parquet").rglob("*.parquet"))
    with psycopg.connect(pg_dsn) as conn:
        dump = " ".join(
            str(r[0])
            for r in conn.execute(f'SELECT t::text FROM "{predictions_table_name(MODEL)}" t')
        )
    for value in ("female", "other", "<40", "40-55"):
        assert value.encode() not in files and value not in dump
