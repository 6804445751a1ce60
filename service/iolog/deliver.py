"""Moving closed spool segments into the log store, by one leader per spool.

Workers only append to their own ``.open`` segment and rename it ``.seg`` when it rotates; they
never touch a ``.seg`` again. The leader (whoever holds ``spool/.deliver.lock``) delivers every
``.seg`` of every worker, and all segments of workers that died (their directory lock is free).
``vigil serve`` runs the leader as a process of its own at a lower CPU priority, so converting to
Parquet or writing to PostgreSQL never holds a serving process's GIL (and its rounds run on a
thread that gets the CPU only when it is otherwise idle, with a guard against starving:
idle_rounds.py); without one (tests, custom ASGI servers) a worker takes the lead itself.

A segment that fails is skipped, not waited for: the later ones are still delivered. A failure
counts as an attempt against the segment only when the store is known to be up, so an outage
never quarantines anything:
- the error is about the segment's content (a corrupt frame, a header or value that cannot be
  converted, a value the store refuses: the sink's ``content_errors``), or
- the store answers ``ping`` and another segment was delivered in the same round.
When ``ping`` fails (PostgreSQL down, Parquet directory not writable) the round stops there and
nothing is counted. After ``VIGIL_DELIVERY_MAX_ATTEMPTS`` attempts (one per round at most) the
segment moves to ``<spool>/quarantine/`` (quarantine.py). Attempts are counted in memory: a new
leader starts again from zero.

Run alone: ``python -m service.iolog.deliver [--parent PID]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from service.iolog import quarantine
from service.iolog.frames import read_frames
from service.iolog.store import LogStore, open_store
from service.metrics import DeliveryMetrics
from service.settings import Settings

log = logging.getLogger("vigil.iolog")
OPEN_SUFFIX = ".open"
CLOSED_SUFFIX = ".seg"
LOCK_FILE = ".lock"
LEAD_FILE = ".deliver.lock"
READY = "vigil-deliverer: leading"


# Errors that say a segment's content cannot be converted, whatever the store (pyarrow's
# ArrowInvalid and ArrowTypeError are ValueError and TypeError).
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    ValueError, KeyError, TypeError, IndexError, NotImplementedError,
)  # fmt: skip


def deliver_segment(sink: LogStore, path: Path, segment_id: str) -> dict[str, int]:
    """One segment into the store, idempotently (the store keys its records by segment id)."""
    frames = list(read_frames(path, strict=path.suffix == CLOSED_SUFFIX))
    return sink.deliver(frames, segment_id)


@dataclass
class _Round:
    """What one delivery round learnt about the store."""

    delivered: bool = False
    store_down: bool = False
    # Failed for a reason that may be the store's: counted only if the store took other writes.
    suspects: list[tuple[Path, str, str]] = field(default_factory=list)
    hurry: threading.Event | None = None  # once set, the round leaves the rest for the next one


def open_sink(settings: Settings) -> LogStore:
    return open_store(settings)


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        metrics: DeliveryMetrics,
        sink_factory: Callable[[Settings], LogStore] = open_sink,
    ) -> None:
        self.root = settings.spool_dir
        self.metrics = metrics
        self._settings = settings
        self._sink_factory = sink_factory
        self._sink: LogStore | None = None
        self._lead_fd: int | None = None
        self._error: str | None = None
        self._attempts: dict[Path, int] = {}  # counted failures of segments still in the spool
        self._reported: set[Path] = set()  # failing segments whose traceback was logged
        # One round at a time: a round runs in a thread, and the app's shutdown round can start
        # while a cancelled maintenance round is still finishing in its thread.
        self._round = threading.Lock()

    # -- leadership --------------------------------------------------------------------------
    def try_lead(self) -> bool:
        """Become the leader if nobody is; cheap to call again once leading."""
        if self._lead_fd is not None:
            return True
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LEAD_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lead_fd = fd
        return True

    def resign(self) -> None:
        if self._lead_fd is not None:
            os.close(self._lead_fd)
            self._lead_fd = None

    # -- delivering --------------------------------------------------------------------------
    def run_once(self, hurry: threading.Event | None = None) -> int:
        """Deliver what can be delivered now (until ``hurry`` is set); returns the bytes left
        in the spool."""
        with self._round:
            return self._run_once(hurry)

    def _run_once(self, hurry: threading.Event | None) -> int:
        if not self.root.is_dir():
            return 0
        if self._sink is None:
            self._sink = self._sink_factory(self._settings)
        backlog = 0
        this_round = _Round(hurry=hurry)
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and d.name != quarantine.QUARANTINE_DIR:
                backlog += self._deliver_worker_dir(d, this_round)
        if this_round.delivered:  # the store takes writes: those failures were the segments'
            for seg, segment_id, reason in this_round.suspects:
                size = _size(seg)
                if self._count_attempt(seg, segment_id, reason):
                    backlog -= size
        self.metrics.iolog_backlog.set(backlog)
        self.metrics.iolog_quarantined.set(quarantine.count(self.root))
        return backlog

    def _deliver_worker_dir(self, d: Path, this_round: _Round) -> int:
        try:
            fd = os.open(d / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live worker's closed segments
                return self._deliver_segments(d, this_round, final=False)
            left = self._deliver_segments(d, this_round, final=True)  # its worker is gone
            if left == 0:
                with contextlib.suppress(OSError):
                    (d / LOCK_FILE).unlink()
                    d.rmdir()
            return left
        finally:
            os.close(fd)

    def _deliver_segments(self, d: Path, this_round: _Round, *, final: bool) -> int:
        """Deliver closed segments (all when ``final``), oldest first; returns bytes left."""
        left = 0
        for seg in sorted(d.glob("seg-*")):
            hurried = this_round.hurry is not None and this_round.hurry.is_set()
            if this_round.store_down or hurried or (seg.suffix == OPEN_SUFFIX and not final):
                left += _size(seg)
                continue
            segment_id = f"{d.name}-{seg.stem}"
            try:
                assert self._sink is not None
                counts = deliver_segment(self._sink, seg, segment_id)
            except Exception as exc:
                self.metrics.iolog_failures.labels("deliver").inc()
                if not self._failed(seg, segment_id, exc, this_round):
                    left += _size(seg)
                continue
            this_round.delivered = True
            self._attempts.pop(seg, None)
            self._reported.discard(seg)
            if self._error is not None:
                log.info("I/O log delivery recovered")
                self._error = None
            for table, n in counts.items():
                if n:
                    self.metrics.iolog_delivered.labels(table).inc(n)
            seg.unlink()
        return left

    def _failed(self, seg: Path, segment_id: str, exc: Exception, this_round: _Round) -> bool:
        """Judge a failed segment; True if it was quarantined."""
        assert self._sink is not None
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, CONTENT_ERRORS + self._sink.content_errors):
            self._report(seg, f"segment {segment_id} cannot be delivered", exc)
            return self._count_attempt(seg, segment_id, reason)
        if not self._sink.ping():  # an outage: stop here, count nothing, retry next round
            this_round.store_down = True
            if self._error is None:
                log.error("delivering %s failed (will retry): %s", seg.name, exc, exc_info=exc)
            self._error = reason
            return False
        this_round.suspects.append((seg, segment_id, reason))
        self._report(seg, f"delivering {segment_id} failed while the store is up", exc)
        return False

    def _report(self, seg: Path, message: str, exc: Exception) -> None:
        """The traceback once per failing segment; each attempt after it is one line."""
        if seg not in self._reported:
            self._reported.add(seg)
            log.error("%s", message, exc_info=exc)

    def _count_attempt(self, seg: Path, segment_id: str, reason: str) -> bool:
        """One more attempt against ``seg``; quarantine it at the limit. True if moved."""
        attempts = self._attempts.get(seg, 0) + 1
        limit = self._settings.delivery_max_attempts
        if attempts < limit:
            self._attempts[seg] = attempts
            log.warning(
                "segment %s: attempt %d of %d failed: %s", segment_id, attempts, limit, reason
            )
            return False
        try:
            dest = quarantine.put(self.root, seg, segment_id, reason, attempts)
        except OSError:
            log.exception("cannot quarantine segment %s; it stays in the spool", segment_id)
            self.metrics.iolog_failures.labels("deliver").inc()
            return False
        self._attempts.pop(seg, None)
        self._reported.discard(seg)
        log.error(
            "segment %s quarantined after %d attempts (%s): %s; once the cause is fixed, "
            "run `vigil logs quarantine retry`", segment_id, attempts, reason, dest,
        )  # fmt: skip
        return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def main(argv: list[str] | None = None) -> int:
    """The leader as a process: deliver every interval until told to stop, then once more."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent", type=int, default=0, help="exit when this process is gone")
    args = parser.parse_args(argv)
    from service.iolog.idle_rounds import IdleRounds  # it imports this module

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    deliverer = Deliverer(settings, DeliveryMetrics())
    rounds = IdleRounds(deliverer, settings.delivery_idle_backlog_bytes)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if deliverer.try_lead():
        print(READY, flush=True)  # vigil serve starts its workers after this line
    else:
        print("another deliverer leads this spool; standing by", flush=True)
    while not stop.is_set():
        if args.parent and os.getppid() != args.parent:
            break
        if deliverer.try_lead():
            try:
                rounds.tick()
            except Exception:
                log.exception("I/O log delivery round failed")
        stop.wait(settings.compact_interval_s)
    rounds.close()
    # Final round: the workers have flushed and released their spools by now.
    if deliverer.try_lead():
        deliverer.run_once()
    deliverer.resign()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
