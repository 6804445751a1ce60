"""`vigil drift schedule`: periodic runs in the foreground, clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from monitoring.drift.schedule import run_every, stop_on_signals
from service.settings import Settings
from tests.conftest import MODEL


def _runs(settings: Settings) -> list[dict[str, object]]:
    path = settings.reports_dir / MODEL / "index.json"
    if not path.is_file():
        return []
    runs: list[dict[str, object]] = json.loads(path.read_text())["runs"]
    return runs


def test_schedule_runs_periodically_and_stops_cleanly_on_sigterm(settings: Settings) -> None:
    env = {
        **os.environ,
        "VIGIL_MODEL_STORE": str(settings.model_store),
        "VIGIL_DATA_DIR": str(settings.data_dir),
    }
    cmd = [sys.executable, "-m", "service.cli.monitoring", "drift", "schedule", "--every", "1s"]
    proc = subprocess.Popen(
        [*cmd, "--model", MODEL], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while len(_runs(settings)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert len(_runs(settings)) >= 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == len(_runs(settings)) >= 2  # one line per run
    assert all(f"{MODEL} insufficient_data: 0 rows" in line for line in lines)
    assert "stopped cleanly" in err.decode()


def test_a_signal_lets_the_run_in_progress_finish_then_stops_the_loop() -> None:
    stop = threading.Event()
    finished: list[int] = []

    def job() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-run
        finished.append(1)

    with stop_on_signals(stop):
        runs = run_every(3600, job, stop)
    assert runs == 1 and finished == [1] and stop.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
