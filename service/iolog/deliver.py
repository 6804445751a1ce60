"""Moving closed spool segments into the log store, by one leader per spool.

Workers only append to their own ``.open`` segment and rename it ``.seg`` when it rotates; they
never touch a ``.seg`` again. The leader (whoever holds ``spool/.deliver.lock``) delivers every
``.seg`` of every worker, and all segments of workers that died (their directory lock is free).
``vigil serve`` runs the leader as a process of its own at a lower CPU priority, so converting to
Parquet or writing to PostgreSQL never holds a serving process's GIL; without one (tests, custom
ASGI servers) a worker takes the lead itself.

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
from pathlib import Path
from types import FrameType
from typing import Protocol

from service.iolog.frames import Frame, read_frames
from service.iolog.store import open_store
from service.metrics import DeliveryMetrics
from service.settings import Settings

log = logging.getLogger("vigil.iolog")
OPEN_SUFFIX = ".open"
CLOSED_SUFFIX = ".seg"
LOCK_FILE = ".lock"
LEAD_FILE = ".deliver.lock"
READY = "vigil-deliverer: leading"


class Sink(Protocol):
    def deliver(self, frames: list[Frame], segment_id: str) -> dict[str, int]: ...


def open_sink(settings: Settings) -> Sink:
    return open_store(settings)


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        metrics: DeliveryMetrics,
        sink_factory: Callable[[Settings], Sink] = open_sink,
    ) -> None:
        self.root = settings.spool_dir
        self.metrics = metrics
        self._settings = settings
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self._lead_fd: int | None = None
        self._error: str | None = None
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
    def run_once(self) -> int:
        """Deliver what can be delivered now; returns the bytes left in the spool."""
        with self._round:
            return self._run_once()

    def _run_once(self) -> int:
        if not self.root.is_dir():
            return 0
        if self._sink is None:
            self._sink = self._sink_factory(self._settings)
        backlog = 0
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            backlog += self._deliver_worker_dir(d)
        self.metrics.iolog_backlog.set(backlog)
        return backlog

    def _deliver_worker_dir(self, d: Path) -> int:
        try:
            fd = os.open(d / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._deliver_segments(d, final=False)  # a live worker's closed segments
            left = self._deliver_segments(d, final=True)  # its worker is gone: everything
            if left == 0:
                with contextlib.suppress(OSError):
                    (d / LOCK_FILE).unlink()
                    d.rmdir()
            return left
        finally:
            os.close(fd)

    def _deliver_segments(self, d: Path, *, final: bool) -> int:
        """Deliver closed segments (all when ``final``), in order; returns bytes left behind."""
        segments = sorted(d.glob("seg-*"))
        for i, seg in enumerate(segments):
            if seg.suffix == OPEN_SUFFIX and not final:
                return sum(_size(s) for s in segments[i:])
            try:
                frames = list(read_frames(seg))
                assert self._sink is not None
                counts = self._sink.deliver(frames, f"{d.name}-{seg.stem}")
            except Exception as exc:
                if self._error is None:
                    log.error("delivering %s failed (will retry): %s", seg.name, exc)
                self._error = str(exc)
                self.metrics.iolog_failures.labels("deliver").inc()
                # Keep order: later segments wait until this one is delivered.
                return sum(_size(s) for s in segments[i:])
            if self._error is not None:
                log.info("I/O log delivery recovered")
                self._error = None
            for table, n in counts.items():
                if n:
                    self.metrics.iolog_delivered.labels(table).inc(n)
            seg.unlink()
        return 0


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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    deliverer = Deliverer(settings, DeliveryMetrics())
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
                deliverer.run_once()
            except Exception:
                log.exception("I/O log delivery round failed")
        stop.wait(settings.compact_interval_s)
    # Final round: the workers have flushed and released their spools by now.
    if deliverer.try_lead():
        deliverer.run_once()
    deliverer.resign()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
