"""Running real processes for tests: a Vigil server on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code == status:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering {status} after {timeout}s (last: {last!r})")


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@dataclass
class VigilServer:
    url: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_vigil(
    home: Path,
    env: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    wait_ready: bool = True,
    args: list[str] | None = None,
) -> VigilServer:
    port = free_port()
    full_env = {
        **os.environ,
        "VIGIL_MODEL_STORE": str(home / "models"),
        "VIGIL_DATA_DIR": str(home / "data"),
        "VIGIL_HOST": "127.0.0.1",
        "VIGIL_PORT": str(port),
        "VIGIL_WORKERS": str(workers),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log_path = home / f"server-{port}.log"
    cmd = args or [sys.executable, "-m", "service.cli", "serve"]
    proc = subprocess.Popen(cmd, env=full_env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    server = VigilServer(f"http://127.0.0.1:{port}", proc, full_env, log_path)
    if wait_ready:
        try:
            wait_http(server.url + "/v2/health/ready", timeout=60)
        except TimeoutError:
            server.stop()
            raise TimeoutError(f"vigil did not become ready; its log:\n{server.log()}") from None
    return server


def wait_stored(settings: Settings, model: str, rows: int, timeout: float = 30.0) -> None:
    """Until the log store (not the spool) holds ``rows`` predictions of ``model``: readers then
    see the same files, so two exports of the window are the same bytes."""
    from service.iolog.store import open_store

    deadline = time.monotonic() + timeout
    while True:
        sources = open_store(settings).prediction_batches(model, None, None, None, ["row"])
        stored = sum(b.num_rows for s in sources for b in s.batches)
        if stored >= rows:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stored} of {rows} rows of {model} stored after {timeout}s")
        time.sleep(0.1)
