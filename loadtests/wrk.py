"""Driving a server with wrk (a Lua script posts a fixed body and prints its summary as JSON)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

SCRIPT = Path(__file__).with_name("wrk_post.lua")
_MARK = "WRK_JSON "


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors and timeouts
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    url: str,
    body_file: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    cpu: str | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    cmd = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s", "-s", str(SCRIPT), url,
    ]  # fmt: skip
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.run(
        cmd,
        env={"WRK_BODY_FILE": str(body_file), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr}")
    doc = orjson.loads(line[len(_MARK) :])
    errors, lat = doc["errors"], doc["latency_us"]
    return WrkResult(
        requests=doc["requests"],
        seconds=doc["duration_us"] / 1e6,
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        non_2xx=errors["status"],
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        max_ms=lat["max"] / 1000,
    )
