"""One bad segment no longer blocks delivery: after N attempts it is quarantined, the others are
delivered, and `vigil logs quarantine retry` delivers it once the cause is fixed. An outage of
the store (every segment fails alike) quarantines nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from service.cli.main import app as cli
from service.iolog.deliver import Deliverer
from service.iolog.frames import encode_feedback, encode_rejected
from service.iolog.quarantine import quarantine_dir
from service.iolog.reader import read_feedback, read_rejected
from service.iolog.record import RejectedRecord
from service.iolog.schema import day
from service.metrics import DeliveryMetrics
from service.settings import Settings
from tests import pgserver
from tests.pgserver import PgServer

pg_server = pgserver.pg_server
pg_dsn = pgserver.pg_dsn
WORKER = "w-dead"  # a spool directory whose worker is gone: all its segments are delivered
MODEL = "m"


def _segment(settings: Settings, seq: int, *frames: bytes) -> Path:
    d = settings.spool_dir / WORKER
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"seg-{seq:08d}.seg"
    path.write_bytes(b"".join(frames))
    return path


def _feedback(rid: str, label: str = "benign") -> bytes:
    return encode_feedback(MODEL, time.time(), [(rid, 0, label)])


def _rejected(rid: str, ts: float) -> bytes:
    record = RejectedRecord(rid, ts, MODEL, "1", "v1_predict", 422, "e", b"{}")
    return encode_rejected(record, "e", "{}")


def _quarantined(metrics: DeliveryMetrics) -> float | None:
    return metrics.registry.get_sample_value("vigil_iolog_quarantined_segments")


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {"VIGIL_DATA_DIR": str(settings.data_dir), "VIGIL_LOG_STORE": settings.log_store}
    result = CliRunner().invoke(cli, ["logs", "quarantine", *args], env=env)
    return result.exit_code, result.output


def _sidecar(settings: Settings, seq: int) -> dict[str, object]:
    path = quarantine_dir(settings.spool_dir) / f"{WORKER}-seg-{seq:08d}.json"
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_a_corrupt_segment_is_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", delivery_max_attempts=3)
    good, bad = _feedback("a"), bytearray(_feedback("b"))
    bad[20] ^= 0xFF  # a flipped byte in a sealed segment: its CRC fails
    corrupt = _segment(settings, 1, good, bytes(bad), _feedback("c"))
    later = _segment(settings, 2, _feedback("d"))
    metrics = DeliveryMetrics()
    deliverer = Deliverer(settings, metrics)
    deliverer.run_once()
    assert not later.exists()  # delivered although the segment before it failed
    assert corrupt.exists() and _quarantined(metrics) == 0
    deliverer.run_once()
    deliverer.run_once()  # the third attempt: the store was not needed to judge it
    assert not corrupt.exists()
    assert not (settings.spool_dir / WORKER).exists()  # the dead worker's spool is done
    assert _quarantined(metrics) == 1
    sidecar = _sidecar(settings, 1)
    assert sidecar["attempts"] == 3 and "CorruptSegment" in str(sidecar["reason"])
    assert sidecar["records"] == 1  # the frames before the corrupt one
    assert read_feedback(settings, MODEL)["request_id"].tolist() == ["d"]  # readers skip it
    code, out = _cli(settings, "list")
    assert code == 0 and f"{WORKER}-seg-00000001  attempts=3" in out and "CorruptSegment" in out
    code, out = _cli(settings, "retry")  # a corrupt file stays corrupt: reported, kept
    assert code == 1 and "still failing (attempt 4)" in out
    assert _sidecar(settings, 1)["attempts"] == 4


def test_a_segment_the_store_refuses_is_quarantined_and_retried_once_fixed(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", delivery_max_attempts=3)
    now = time.time()
    # A file where the store needs the rejected table's date directory: every write of that
    # segment fails with an OSError while the store itself (ping) is fine.
    blocker = settings.data_dir / "iolog" / "rejected" / f"date={day(now)}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    refused = _segment(settings, 1, _rejected("r1", now))
    metrics = DeliveryMetrics()
    deliverer = Deliverer(settings, metrics)
    for _ in range(4):  # alone, its failure may be the store's: never counted
        deliverer.run_once()
    assert refused.exists() and _quarantined(metrics) == 0
    for seq in (2, 3, 4):  # with traffic: other segments reach the store, so it is up
        later = _segment(settings, seq, _feedback(f"f{seq}"))
        deliverer.run_once()
        assert not later.exists()
    assert not refused.exists() and _quarantined(metrics) == 1
    assert _sidecar(settings, 1)["attempts"] == 3
    code, out = _cli(settings, "list")
    assert code == 0 and "records=1" in out and "FileExistsError" in out
    assert _cli(settings, "retry")[0] == 1  # not fixed yet
    blocker.unlink()
    code, out = _cli(settings, "retry", "--segment", f"{WORKER}-seg-00000001")
    assert code == 0 and f"{WORKER}-seg-00000001: delivered" in out, out
    assert read_rejected(settings)["request_id"].tolist() == ["r1"]
    assert not list(quarantine_dir(settings.spool_dir).iterdir())
    deliverer.run_once()
    assert _quarantined(metrics) == 0


@pytest.mark.postgres
def test_postgres_down_quarantines_nothing_and_a_refused_record_is_quarantined(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", log_store=pg_dsn, delivery_max_attempts=2)
    metrics = DeliveryMetrics()
    deliverer = Deliverer(settings, metrics)
    _segment(settings, 1, _feedback("a"))
    deliverer.run_once()  # creates the tables
    segments = [_segment(settings, seq, _feedback(f"b{seq}")) for seq in (2, 3, 4)]
    pg_server.stop()
    try:
        for _ in range(4):
            deliverer.run_once()
        assert all(s.exists() for s in segments) and _quarantined(metrics) == 0
        failures = metrics.registry.get_sample_value(
            "vigil_iolog_failures_total", {"stage": "deliver"}
        )
        assert failures == 4  # one per round: the round stops once ping says the store is down
    finally:
        pg_server.start()
    deliverer.run_once()
    assert not any(s.exists() for s in segments) and _quarantined(metrics) == 0

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a record the store refuses
        conn.execute("ALTER TABLE vigil_feedback ADD CONSTRAINT no_poison CHECK (label <> 'x')")
    poison = _segment(settings, 5, _feedback("p", label="x"))
    later = _segment(settings, 6, _feedback("c"))
    deliverer.run_once()
    assert poison.exists() and not later.exists()
    deliverer.run_once()
    assert not poison.exists() and _quarantined(metrics) == 1
    assert "CheckViolation" in str(_sidecar(settings, 5)["reason"])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE vigil_feedback DROP CONSTRAINT no_poison")
    code, out = _cli(settings, "retry")
    assert code == 0 and "delivered" in out, out
    assert "p" in read_feedback(settings, MODEL)["request_id"].tolist()
