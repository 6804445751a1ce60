"""The role column: a shadow row shares (request_id, row) with its primary row, and both stay."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from service.iolog.frames import SHADOW, Frame, Schema, encode_prediction, read_frames
from service.iolog.labels import SeenKeys, key_hashes, row_keys
from service.iolog.record import IORecord
from service.iolog.schema import predictions_table


def _record(role: str, status: int = 200) -> IORecord:
    return IORecord(
        request_id="r1", received_at=1_700_000_000.0, model="m", version=1, sha256="ab" * 32,
        endpoint="v1_predict", status=status, latency_s=0.001, feature_names=("a", "b"),
        inputs=np.array([[1.0, 2.0], [3.0, 4.0]]), class_names=("no", "yes"),
        labels=np.array([1, 0]), probabilities=np.array([[0.2, 0.8], [0.6, 0.4]], np.float32),
        metadata={}, role=role,
    )  # fmt: skip


def _frames(tmp_path: object, *records: IORecord) -> list[Frame]:
    from pathlib import Path

    path = Path(str(tmp_path)) / "seg"
    schema = Schema.build(records[0], None)
    path.write_bytes(schema.frame() + b"".join(encode_prediction(r, schema, None) for r in records))
    return [f for f in read_frames(path) if f.header["t"] == "p"]


def test_shadow_rows_keep_their_role_and_their_own_keys(tmp_path: object) -> None:
    table = predictions_table(_frames(tmp_path, _record("primary"), _record(SHADOW, 500)))
    assert table.column("role").to_pylist() == ["primary", "primary", "shadow", "shadow"]
    # a failed candidate row has no prediction
    assert table.column("prediction").to_pylist() == ["yes", "no", None, None]
    keys = row_keys(table)
    assert len(set(keys.tolist())) == 4
    assert SeenKeys().fresh(keys).all()
    # labels join on (request_id, row), whatever the role
    joined = key_hashes(table).tolist()
    assert joined[0] == joined[2] and joined[1] == joined[3]


def test_rows_without_a_role_keep_the_key_they_had() -> None:
    old = pa.table({"request_id": ["r1"], "row": pa.array([0], pa.int32())})
    new = old.append_column("role", pa.array(["primary"]))
    assert row_keys(old).tolist() == row_keys(new).tolist() == key_hashes(old).tolist()
