"""The deliverer's rounds run on a SCHED_IDLE thread, and on its own thread at its own priority
once the spool backlog passes the bound (an idle thread can starve on a busy CPU)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.iolog.deliver import Deliverer
from service.iolog.idle_rounds import IdleRounds, spool_bytes
from service.iolog.reader import read_feedback
from service.metrics import DeliveryMetrics
from service.settings import Settings
from tests.test_iolog_quarantine import MODEL, _feedback, _segment


def _idle_threads() -> int:
    """Threads of this process at SCHED_IDLE (Linux, as Vigil's images)."""
    idle = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            idle += os.sched_getscheduler(int(tid)) == os.SCHED_IDLE
    return idle


def _deliverer(settings: Settings) -> Deliverer:
    """A deliverer whose store is open, opened on this thread: an idle thread, which a busy
    machine may leave waiting, then has only the segments to do."""
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    deliverer = Deliverer(settings, DeliveryMetrics())
    assert deliverer.run_once() == 0
    return deliverer


def _spool(settings: Settings, n: int) -> list[Path]:
    return [_segment(settings, i, _feedback(f"r-{i}")) for i in range(1, n + 1)]


def _wait_gone(paths: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(p.exists() for p in paths):
        assert time.monotonic() < deadline, "the segments were not delivered"
        time.sleep(0.02)


def test_below_the_bound_an_idle_thread_delivers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    deliverer = _deliverer(settings)
    segments = _spool(settings, 3)
    rounds = IdleRounds(deliverer, urgent_bytes=1 << 30)
    assert _idle_threads() == 0
    try:
        rounds.tick()
        _wait_gone(segments)
        assert _idle_threads() == 1 and not rounds.urgent
    finally:
        rounds.close()
    assert sorted(read_feedback(settings, MODEL)["request_id"]) == ["r-1", "r-2", "r-3"]


def test_past_the_bound_the_calling_thread_delivers_until_under_half(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    segments = _spool(settings, 4)
    size = spool_bytes(settings.spool_dir)
    assert size == sum(p.stat().st_size for p in segments)
    rounds = IdleRounds(Deliverer(settings, DeliveryMetrics()), urgent_bytes=size - 1)
    try:
        with caplog.at_level(logging.INFO, "vigil.iolog"):
            rounds.tick()  # delivered by the time it returns: no thread involved
            assert rounds.urgent and not any(p.exists() for p in segments)
            assert "over" in caplog.text and "the process's priority" in caplog.text
            more = _spool(settings, 1)  # under half the bound: back to the idle thread
            rounds.tick()
            assert not rounds.urgent and "back under" in caplog.text
            _wait_gone(more)
    finally:
        rounds.close()


def test_an_idle_round_in_progress_is_told_to_hurry(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    deliverer = _deliverer(settings)
    segments = _spool(settings, 3)
    rounds = IdleRounds(deliverer, urgent_bytes=1 << 30)
    try:
        with deliverer._round:  # the idle round starts but waits here, as if starved
            rounds.tick()
            rounds.urgent_bytes = 1  # the backlog is now past the bound
            rounds.tick()  # cannot deliver while the idle round runs: tells it to hurry
            assert rounds.urgent and all(p.exists() for p in segments)
        deadline = time.monotonic() + 30
        while rounds.urgent or any(p.exists() for p in segments):
            assert time.monotonic() < deadline, "the calling thread never took over"
            rounds.tick()  # once the hurried round returned (delivering nothing), this one does
            time.sleep(0.02)
    finally:
        rounds.close()


def test_a_hurried_round_leaves_every_segment_for_the_next(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    segments = _spool(settings, 2)
    hurry = threading.Event()
    hurry.set()
    deliverer = Deliverer(settings, DeliveryMetrics())
    assert deliverer.run_once(hurry) == sum(p.stat().st_size for p in segments)
    assert all(p.exists() for p in segments)
    assert deliverer.run_once() == 0 and not any(p.exists() for p in segments)


def test_the_deliverer_process_guards_its_idle_thread(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    segments = _spool(settings, 2)
    env = {
        **os.environ,
        "VIGIL_DATA_DIR": str(settings.data_dir),
        "VIGIL_DELIVERY_IDLE_BACKLOG_BYTES": "1",
        "VIGIL_COMPACT_INTERVAL_S": "0.1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.iolog.deliver"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_gone(segments)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "delivering at the process's priority" in out, out


def test_only_closed_segments_count_as_backlog(tmp_path: Path) -> None:
    # A worker's open segment grows with the traffic however fast the deliverer is.
    settings = Settings(data_dir=tmp_path / "data")
    (closed,) = _spool(settings, 1)
    closed.with_name("seg-00000002.open").write_bytes(_feedback("open") * 100)
    assert spool_bytes(settings.spool_dir) == closed.stat().st_size
