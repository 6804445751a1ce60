"""Poll a server's liveness until told to stop: ``python -m loadtests.live_poller URL``.

Prints ``ready`` after the first answer; polls every 5 ms until its stdin is closed, then prints
the latencies (seconds, -1 for a failure) as one JSON list. A process of its own, with nothing
else imported: in the process that drives the load, waiting for the GIL would count as latency.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def poll(url: str, stop: threading.Event, interval_s: float = 0.005) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=10.0) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = client.get(url + "/v2/health/live").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start if ok else -1.0)
            if len(latencies) == 1:
                print("ready", flush=True)
            stop.wait(interval_s)
    return latencies


def main() -> None:
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps(poll(sys.argv[1], stop)), flush=True)


if __name__ == "__main__":
    main()
