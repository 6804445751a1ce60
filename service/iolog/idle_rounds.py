"""The deliverer process's rounds on a thread that runs only when the CPU is otherwise idle.

Converting a round's segments is CPU work in proportion to the traffic, every few seconds. At
nice 10 on a serving worker's CPU it still took slices of that CPU at wake-up, and showed in the
p99 of a single connection (11x its p50 on a quiet machine). A thread at SCHED_IDLE runs only
when nothing else wants the CPU; but on a saturated CPU it would starve, and an unprivileged
process can lower a thread's priority, never raise it back (RLIMIT_NICE is 0 in containers). So
the guard is the calling thread: while the spool holds more than ``urgent_bytes``, rounds run on
it at the process's own priority (nice 10 under ``vigil serve``: delivery as before) until the
backlog is under half of that; an idle round in progress is told to stop after the segment in
hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from service.iolog.deliver import CLOSED_SUFFIX
from service.iolog.quarantine import QUARANTINE_DIR

if TYPE_CHECKING:
    from service.iolog.deliver import Deliverer

log = logging.getLogger("vigil.iolog")


def become_idle() -> bool:
    """Move the calling thread to SCHED_IDLE (Linux); False where the system has no such policy."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread
    except OSError:
        log.warning("cannot move the delivery thread to SCHED_IDLE", exc_info=True)
        return False
    return True


def spool_bytes(root: Path) -> int:
    """Bytes in every worker's closed spool segments, those a round can deliver (the open ones
    grow with the traffic whatever the deliverer does); stat only, cheap enough for every tick."""
    total = 0
    for seg in root.glob(f"*/seg-*{CLOSED_SUFFIX}"):
        if seg.parent.name != QUARANTINE_DIR:
            with contextlib.suppress(FileNotFoundError):  # delivered meanwhile
                total += seg.stat().st_size
    return total


class IdleRounds:
    def __init__(self, deliverer: Deliverer, urgent_bytes: int) -> None:
        self.deliverer = deliverer
        self.urgent_bytes = urgent_bytes
        self.urgent = False
        self._hurry = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vigil-deliver-idle", initializer=become_idle
        )
        self._round: Future[int] | None = None

    def tick(self) -> None:
        """One step of the leader's loop: start a round, unless one is still running."""
        backlog = spool_bytes(self.deliverer.root)
        was = self.urgent
        self.urgent = backlog > (self.urgent_bytes // 2 if was else self.urgent_bytes)
        if self.urgent != was:
            (log.warning if self.urgent else log.info)(
                "I/O log spool backlog %d bytes %s %d (VIGIL_DELIVERY_IDLE_BACKLOG_BYTES): "
                "delivering at %s priority",
                backlog, "over" if self.urgent else "back under", self.urgent_bytes,
                "the process's" if self.urgent else "idle",
            )  # fmt: skip
        if self._round is not None:
            if not self._round.done():
                if self.urgent:
                    self._hurry.set()
                return
            round_, self._round = self._round, None
            if (exc := round_.exception()) is not None:
                log.error("I/O log delivery round failed", exc_info=exc)
        self._hurry.clear()
        if self.urgent:
            self.deliverer.run_once()
        else:
            self._round = self._pool.submit(self.deliverer.run_once, self._hurry)

    def close(self) -> None:
        """Wait for a round in progress (told to hurry: the final round follows)."""
        self._hurry.set()
        self._pool.shutdown(wait=True)
