"""Bounded concurrent load for tests: who got a 200, and who got what else."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    ok: dict[str, int] = field(default_factory=dict)  # request id -> rows
    statuses: dict[int, int] = field(default_factory=dict)
    connection_errors: int = 0
    versions: list[int] = field(default_factory=list)


def run_load(
    url: str,
    rows: list[dict[str, float]],
    *,
    threads: int = 8,
    seconds: float = 3.0,
    batch: int = 3,
    stop: threading.Event | None = None,
    path: str = "/v1/models/breast-cancer/predict",
) -> LoadResult:
    result = LoadResult()
    lock = threading.Lock()
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                rid = f"t{k}-{i}-{uuid.uuid4().hex[:6]}"
                chunk = [rows[(k * 31 + i * batch + j) % len(rows)] for j in range(batch)]
                i += 1
                try:
                    r = client.post(path, json={"instances": chunk}, headers={"X-Request-ID": rid})
                except httpx.HTTPError:
                    with lock:
                        result.connection_errors += 1
                    time.sleep(0.01)
                    continue
                with lock:
                    result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        result.ok[rid] = batch
                        result.versions.append(r.json()["version"])

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 30)
    return result
