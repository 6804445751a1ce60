"""Starting the servers under test: Vigil in a fresh home, the naive baseline, the no-work floor,
RSS sampling."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from model_store.demo import DEMO_MODEL, train_demo
from model_store.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_template(root: Path) -> Path:
    """A model store with demo v1 (production) and a weaker v2 candidate, trained once per run."""
    store_dir = root / "models"
    store = ModelStore(store_dir)
    train_demo(store)
    train_demo(store, c=0.01, promote=False)
    return store_dir


def demo_onnx(store_dir: Path) -> Path:
    version = ModelStore(store_dir).resolve(DEMO_MODEL, "production")
    return store_dir / DEMO_MODEL / str(version) / "model.onnx"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without VIGIL_* settings, so "as shipped" means the defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def rss(self) -> int:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            value = self.rss()
            if value:
                self.samples.append((time.monotonic() - self._t0, value))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    home: Path | None = None
    sampler: RssSampler | None = field(default=None)

    def stop(self, timeout: float = 30.0) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _wait_ready(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not become ready; its log:\n{server.log_tail()}")


def launch(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    ready_path: str,
    *,
    cpu: str | None = None,
    home: Path | None = None,
    timeout: float = 90.0,
    cwd: Path = ROOT,
) -> Server:
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path, home)
    _wait_ready(server, ready_path, timeout)
    server.sampler = RssSampler(proc.pid)
    server.sampler.start()
    return server


def start_vigil(
    name: str,
    template: Path,
    workdir: Path,
    settings: dict[str, str] | None = None,
    *,
    cpu: str | None = None,
    source: Path = ROOT,
) -> Server:
    """Vigil on a free port in a fresh home (a copy of the template store).

    ``source``: the source tree to run, this one by default (another to measure a baseline).
    """
    home = workdir / name
    shutil.copytree(template, home / "models")
    port = free_port()
    env = clean_env(
        VIGIL_MODEL_STORE=str(home / "models"),
        VIGIL_DATA_DIR=str(home / "data"),
        VIGIL_HOST="127.0.0.1",
        VIGIL_PORT=str(port),
        VIGIL_WORKERS="1",
        PYTHONPATH=str(source),
        **(settings or {}),
    )
    cmd = [sys.executable, "-m", "service.cli", "serve"]
    return launch(
        name, cmd, env, port, home / "server.log", "/v2/health/ready",
        cpu=cpu, home=home, cwd=source,
    )  # fmt: skip


def start_naive(name: str, model_path: Path, workdir: Path, *, cpu: str | None = None) -> Server:
    port = free_port()
    env = clean_env(NAIVE_MODEL_PATH=str(model_path))
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "loadtests.naive_baseline:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return launch(name, cmd, env, port, workdir / name / "server.log", "/health", cpu=cpu)


def start_floor(name: str, workdir: Path, *, cpu: str | None = None) -> Server:
    """The no-work ASGI app (loadtests/floor_app.py) on uvicorn as ``vigil serve`` runs it."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "loadtests.floor_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning", "--no-server-header", "--lifespan", "off",
    ]  # fmt: skip
    return launch(name, cmd, clean_env(), port, workdir / name / "server.log", "/", cpu=cpu)
