"""A throwaway S3-compatible server (moto's) on loopback for the object-store tests.

Moto cannot share the service's virtual environment (its botocore needs an older python-dateutil
than the one installed), so it runs from an interpreter of its own: ``VIGIL_TEST_MOTO_PYTHON``,
else ``.venv-moto/bin/python`` in the repository (``python -m venv .venv-moto &&
.venv-moto/bin/pip install 'moto[server]'``), else this interpreter if it can import moto. The
service speaks S3 over HTTP to it with pyarrow's client; nothing is patched in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.fs as pafs
import pytest

from tests.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
# Credentials moto accepts; the tests also check that they never reach a log or an error.
ACCESS_KEY = "AKIAVIGILTESTKEY0001"
SECRET_KEY = "vigil-test-secret-Zq8xR3"


def moto_python() -> str | None:
    candidates = [os.environ.get("VIGIL_TEST_MOTO_PYTHON", ""), str(ROOT / ".venv-moto/bin/python")]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    try:
        import moto  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def aws_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass
class MotoServer:
    python: str
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # e.g. INITIAL_NO_AUTH_ACTION_COUNT=0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint, timeout=1)  # any answer: it is up
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"moto server did not start: {self.log_path}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None

    def freeze(self) -> None:
        """An outage that keeps the data: the process stops answering (SIGSTOP)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def filesystem(self, **options: object) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            connect_timeout=2,
            request_timeout=5,
            **options,  # type: ignore[arg-type]
        )

    def new_bucket(self) -> str:
        name = f"vigil-{uuid.uuid4().hex[:12]}"
        self.filesystem(allow_bucket_creation=True).create_dir(name)
        return name


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    python = moto_python()
    if python is None:
        pytest.fail("moto[server] is not installed: scripts/venv installs it with the dev extras")
    server = MotoServer(python, free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh bucket; the environment a Vigil process needs for it (also set in this one)."""
    bucket = moto_server.new_bucket()
    env = {
        **aws_env(),
        "VIGIL_LOG_STORE": f"s3://{bucket}/iolog",
        "VIGIL_S3_ENDPOINT_URL": moto_server.endpoint,
        "VIGIL_S3_REGION": "us-east-1",
        "VIGIL_S3_TIMEOUT_S": "1",
        "VIGIL_S3_MAX_ATTEMPTS": "1",  # an outage is then reported within seconds
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
