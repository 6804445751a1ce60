"""``vigil drift schedule``: the drift job in a foreground loop, for VMs and local use.

SIGTERM or SIGINT lets the run in progress finish (its report is written whole), then the loop
exits 0; a second signal stops at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: do not wait for the run in progress
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_every(interval_s: float, job: Callable[[], None], stop: threading.Event) -> int:
    """Run ``job`` now and then every ``interval_s`` (start to start) until ``stop``; runs done."""
    runs = 0
    next_start = time.monotonic()
    while not stop.is_set():
        job()
        runs += 1
        next_start += interval_s
        # a run longer than the interval is followed at once, not by a burst of catch-up runs
        next_start = max(next_start, time.monotonic())
        stop.wait(next_start - time.monotonic())
    return runs
