"""A real Prometheus and Pushgateway (Debian packages) on loopback ports, for tests.

Both run as child processes in a temporary directory and are stopped at teardown. The
binaries are looked up on PATH and in /usr/bin; the CI script installs the packages.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import free_port, stop_process, wait_http


def require_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH or in /usr/bin: install the Debian packages "
            "`prometheus` and `prometheus-pushgateway` (apt-get install prometheus "
            "prometheus-pushgateway) to run the Prometheus tests",
            pytrace=False,
        )
    return path


@dataclass
class _Process:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            wait_http(self.url + "/-/ready", timeout=timeout)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"{self.url} did not become ready; its log:\n{self.log()}") from None


class Pushgateway(_Process):
    pass


class Prometheus(_Process):
    def api(self, path: str, **params: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body: dict[str, Any] = r.json()
        return body

    def query(self, expr: str) -> dict[str, Any]:
        """Instant query at now; the raw API answer (status, data or errorType/error)."""
        return self.api("query", query=expr)

    def targets_up(self) -> dict[str, str]:
        """scrape pool → health of its first target."""
        active = self.api("targets")["data"]["activeTargets"]
        return {t["scrapePool"]: t["health"] for t in active}

    def wait_targets_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            health = self.targets_up()
            if health and all(h == "up" for h in health.values()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus targets not all up after {timeout}s: {health}")

    def wait_for(self, expr: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll until an instant query returns at least one series."""
        deadline = time.monotonic() + timeout
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = self.query(expr)
            if answer.get("status") == "success" and answer["data"]["result"]:
                result: list[dict[str, Any]] = answer["data"]["result"]
                return result
            time.sleep(0.25)
        raise TimeoutError(f"no data for {expr!r} after {timeout}s (last answer: {answer})")


def start_pushgateway(workdir: Path) -> Pushgateway:
    binary = require_binary("prometheus-pushgateway")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "pushgateway.log"
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Pushgateway(f"http://127.0.0.1:{port}", proc, log_path)


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    honor_labels: bool = False


def prometheus_config(
    targets: Iterable[ScrapeTarget], rule_files: Iterable[Path] = ()
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": t.job,
                "honor_labels": t.honor_labels,
                "static_configs": [{"targets": [t.address]}],
            }
            for t in targets
        ],
    }


def start_prometheus(
    workdir: Path,
    targets: Iterable[ScrapeTarget],
    rule_files: Iterable[Path] = (),
    extra_args: Mapping[str, str] | None = None,
) -> Prometheus:
    """Start Prometheus scraping ``targets`` every second; call ``wait_ready`` before use."""
    binary = require_binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets, rule_files), sort_keys=False))
    port = free_port()
    args = {
        "--config.file": str(config),
        "--storage.tsdb.path": str(workdir / "tsdb"),
        "--web.listen-address": f"127.0.0.1:{port}",
        "--log.level": "warn",
        **(extra_args or {}),
    }
    log_path = workdir / "prometheus.log"
    proc = subprocess.Popen(
        [binary, *(f"{k}={v}" for k, v in args.items()), "--web.enable-lifecycle"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    return Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
