"""Rollout reports in a child process, off the serving worker's interpreter.

A report reads the rollout's window of the I/O log and compares the two versions: pandas work in
proportion to the window (about 2 s for a million rows). Run in a thread of a serving worker it
held that worker's GIL: an asyncio loop beside it stalled up to 321 ms (1.45 s of stalls in a
2.3 s report), so every request in flight waited. Here the worker's thread only waits on a pipe.

The child is started on first use (``spawn``: never a fork of a threaded process), runs at nice
10, and is stopped after ``IDLE_S`` without a report (``close_if_idle``, called by the automatic
loop) and when the worker stops. A child that dies (killed for memory on a huge window) costs
that one report, which says so in ``comparison_error``, never the worker; the next report starts
a new child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from model_store.rollout import RolloutState
from service.offline.rollout_report import rollout_report
from service.settings import Settings

log = logging.getLogger("vigil.rollout")
IDLE_S = 120.0
NICE = 10


def _lower_priority() -> None:
    os.nice(NICE)


class ReportProcess:
    def __init__(self, settings: Settings, idle_s: float = IDLE_S) -> None:
        self.settings = settings
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._last_used = 0.0
        self._busy = 0  # reports in progress: never stopped under one

    def report(self, state: RolloutState, now: datetime | None = None) -> dict[str, Any]:
        """``rollout_report`` of ``state``, computed in the child (blocking: call in a thread)."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_lower_priority,
                )
            pool = self._pool
            self._busy += 1
        try:
            result: dict[str, Any] = pool.submit(rollout_report, self.settings, state, now).result()
        except BrokenProcessPool:
            self._discard(pool)
            log.error("the rollout report process of %s died; the next report starts another",
                      state.model)  # fmt: skip
            return {
                "comparison": None,
                "comparison_error": "the report process died (out of memory on a large "
                "window?); the next evaluation starts a new one",
            }
        finally:
            with self._lock:
                self._busy -= 1
                self._last_used = time.monotonic()
        return result

    @property
    def child_pids(self) -> list[int]:
        """The running child's pid (empty when none runs)."""
        with self._lock:
            processes = getattr(self._pool, "_processes", None) or {}
        return [int(pid) for pid in processes]

    def close_if_idle(self) -> None:
        """Stop the child if no report used it for ``idle_s`` (its memory goes back)."""
        with self._lock:
            pool = self._pool
            idle = time.monotonic() - self._last_used
            if pool is None or self._busy or idle < self.idle_s:
                return
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
