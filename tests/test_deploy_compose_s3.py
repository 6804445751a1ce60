"""docker-compose.s3.yml: the stack with the log on a local S3-compatible server, wired to what
the repository provides, and that server's script really serving the bucket."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
import yaml

from service.settings import Settings
from tests.s3server import moto_python
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """The override merged over docker-compose.yml as compose merges mappings."""
    base: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    override: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.s3.yml").read_text())
    services = base["services"]
    for name, svc in override["services"].items():
        merged = services.setdefault(name, {})
        for key, value in svc.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return base


def _ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def test_vigil_drift_and_compact_log_to_the_local_bucket(stack: dict[str, Any]) -> None:
    services = stack["services"]
    s3 = services["s3"]
    stores = set()
    for name in ("vigil", "drift", "compact"):
        env = services[name]["environment"]
        stores.add(env["VIGIL_LOG_STORE"])
        for key in env:
            assert key.startswith("AWS_") or key.removeprefix("VIGIL_").lower() in (
                Settings.model_fields
            ), key
        host, port = re.fullmatch(r"http://([^:/]+):(\d+)", env["VIGIL_S3_ENDPOINT_URL"]).groups()  # type: ignore[union-attr]
        assert host == "s3" and int(port) == int(s3["environment"]["PORT"]) in _ports(s3)
    (store,) = stores
    assert store.startswith(f"s3://{s3['environment']['BUCKET']}/")
    for name in ("vigil", "compact"):
        assert services[name]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert services["compact"]["image"] == services["vigil"]["image"]
    assert "vigil logs compact --older-than 1h" in services["compact"]["entrypoint"][-1]
    script = s3["volumes"][0].split(":")[0]
    assert (ROOT / script).is_file()


def test_the_local_s3_script_serves_the_bucket(tmp_path: Path) -> None:
    python = moto_python()
    if python is None:
        pytest.fail("moto[server] is not installed: scripts/venv installs it with the dev extras")
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "BUCKET": "vigil-logs"}
    proc = subprocess.Popen(
        [python, str(ROOT / "scripts" / "local_s3.py")], env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().decode()]
        while not lines[-1].startswith("local S3") and lines[-1] and len(lines) < 5:
            lines.append(proc.stdout.readline().decode())  # moto may print a line of its own
        assert lines[-1].startswith(f"local S3 on 127.0.0.1:{port}"), lines
        fs = pafs.S3FileSystem(
            access_key="local", secret_key="local", region="us-east-1",
            endpoint_override=f"127.0.0.1:{port}", scheme="http",
        )  # fmt: skip
        assert fs.get_file_info("vigil-logs").type == pafs.FileType.Directory
    finally:
        proc.terminate()
        proc.wait(10)
