"""The local append-only spool, and the I/O log the service writes through.

Acknowledged means logged: ``append`` returns only after the record's frame is in the spool file
(``write(2)`` done, so it survives a kill -9 of the process; with fsync=always it is also on disk).
Appends of concurrent requests that arrive in the same event-loop turn share one ``write`` (group
commit). Each worker process owns a spool directory, locked with flock; closed segments are
delivered to the store by a background thread, and a dead worker's directory is taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from model_store.store import ModelStore
from service.errors import LogUnavailable
from service.iolog.deliver import (
    CLOSED_SUFFIX,
    LOCK_FILE,
    OPEN_SUFFIX,
    Deliverer,
    open_sink,
)
from service.iolog.frames import (
    FEEDBACK,
    PREDICTIONS,
    REJECTED,
    PiiRules,
    Schema,
    encode_feedback,
    encode_prediction,
    encode_rejected,
)
from service.iolog.pii import PiiPolicies
from service.iolog.quarantine import QUARANTINE_DIR
from service.iolog.record import IORecord, RejectedRecord
from service.iolog.store import LogStore
from service.metrics import Metrics
from service.settings import FsyncPolicy, OnLogFailure, Settings

log = logging.getLogger("vigil.iolog")


def _seal(fd: int, open_path: Path) -> None:
    """Make a finished segment durable and visible to the deliverer as ``.seg``."""
    try:
        os.fsync(fd)
    except OSError:
        log.exception("fsync of %s failed; delivering it anyway", open_path.name)
    finally:
        os.close(fd)
    os.rename(open_path, open_path.with_suffix(CLOSED_SUFFIX))


def spool_segments(spool_root: Path) -> list[Path]:
    """Every segment in every worker's spool directory (for readers)."""
    if not spool_root.is_dir():
        return []
    return sorted(
        p
        for d in spool_root.iterdir()
        if d.is_dir() and d.name != QUARANTINE_DIR  # undeliverable, perhaps unreadable
        for p in d.iterdir()
        if p.suffix in (OPEN_SUFFIX, CLOSED_SUFFIX)
    )


class _Segments:
    """This worker's spool directory: one open segment, rotated by size or age."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.dir = root / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self._lock = os.open(self.dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.max_bytes = max_bytes
        self.seq = 0
        self.fd: int | None = None
        self._closing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-spool-seal")
        self.declared: set[str] = set()  # schema keys already written to the open segment
        self.size = 0
        self.opened_at = 0.0

    def _path(self, seq: int, suffix: str) -> Path:
        return self.dir / f"seg-{seq:08d}{suffix}"

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.seq += 1
            self.fd = os.open(
                self._path(self.seq, OPEN_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            self.size = 0
            self.opened_at = time.monotonic()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            # Cut off the partial frame so later frames are not appended after garbage.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)
        if self.size >= self.max_bytes:
            self.rotate()

    def fsync(self) -> None:
        """Everything written so far is on disk once this returns (called off the event loop):
        segments rotated meanwhile are sealed first (the executor runs in order), then the
        open one is synced."""
        self._closing.submit(lambda: None).result()
        fd = self.fd
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:  # rotated and sealed in between: already synced
                    raise

    def rotate(self) -> None:
        """Start a new segment; the old one is fsynced, closed and renamed ``.seg`` off the
        event loop (an fsync of a full segment took tens of ms: the p99 showed it)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        self.declared = set()
        self._closing.submit(_seal, fd, self._path(self.seq, OPEN_SUFFIX))

    def age(self) -> float:
        return time.monotonic() - self.opened_at if self.fd is not None else 0.0

    def close(self) -> None:
        self.rotate()
        self._closing.shutdown(wait=True)
        os.close(self._lock)


class SpoolIOLog:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        sink_factory: Callable[[Settings], LogStore] = open_sink,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._deliverer = Deliverer(settings, metrics, sink_factory)
        self._segments: _Segments | None = None
        self._pending: list[bytes] = []
        # Resolved once: a label lookup per request is measurable on the hot path.
        self._spooled = {
            t: metrics.counter(metrics.iolog_spooled.labels(t))
            for t in (PREDICTIONS, REJECTED, FEEDBACK)
        }
        self._pending_schemas: dict[str, Schema] = {}
        self._schemas: dict[tuple[str, int, str], Schema] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._pending_rows = 0
        self._flush_scheduled = False
        self._healthy = True
        self._reason = "ok"
        self._tasks: list[asyncio.Task[None]] = []
        self._pii: dict[tuple[str, int], PiiRules | None] = {}
        self._policies = PiiPolicies(
            ModelStore(settings.model_store), settings.pii_secret.get_secret_value(), metrics
        )
        self._deliver_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._segments = _Segments(self.settings.spool_dir, self.settings.spool_segment_bytes)
        except OSError as exc:
            self._set_health(False, f"spool directory unusable: {exc}")
        self.metrics.iolog_healthy.set(1 if self._healthy else 0)
        self._tasks = [asyncio.create_task(self._maintain())]
        if self.settings.fsync is FsyncPolicy.INTERVAL:
            self._tasks.append(asyncio.create_task(self._fsync_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            self._flush()
        for fut in list(self._waiters):
            with contextlib.suppress(Exception):
                await fut
        if self._segments is not None:
            try:
                self._segments.close()
            except OSError:
                log.exception("closing the spool segment failed")
            # Closed and unlocked: the leader (this process, or the deliverer) hands it over.
            await self._deliver_all()
        self._deliverer.resign()

    # -- health ------------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        return self._healthy, self._reason

    def _set_health(self, healthy: bool, reason: str) -> None:
        if healthy != self._healthy:
            (log.info if healthy else log.error)(
                "I/O log spool %s: %s", "recovered" if healthy else "failing", reason
            )
        self._healthy, self._reason = healthy, reason
        self.metrics.iolog_healthy.set(1 if healthy else 0)

    # -- appending (event-loop thread) -------------------------------------------------------
    def _pii_rules(self, model: str, version: int) -> PiiRules | None:
        key = (model, version)
        if key not in self._pii:
            # Raises (and caches nothing) while the policy cannot be read: fail closed.
            self._pii[key] = self._policies.rules(model, version)
        return self._pii[key]

    async def append(self, record: IORecord) -> None:
        frame = self._encode(record)
        if frame is not None:
            await self._submit(frame, record.rows, PREDICTIONS)

    async def append_many(self, records: Sequence[IORecord]) -> None:
        """Records of one request (a primary row and its shadow) in one frame group: written by
        the same ``write`` (and fsync), so they are durable together or not at all."""
        frames, rows = [], 0
        for record in records:  # a plain loop: a comprehension and a generator cost 0.3 µs more
            rows += record.rows
            frame = self._encode(record)
            if frame is not None:
                frames.append(frame)
        if frames:
            await self._submit(b"".join(frames), rows, PREDICTIONS)

    def _encode(self, record: IORecord) -> bytes | None:
        try:
            pii = self._pii_rules(record.model, record.version)
        except LogUnavailable:  # its PII policy is unknown: never log it in clear
            if self.settings.on_log_failure is not OnLogFailure.SERVE:
                raise
            self.metrics.iolog_unlogged.inc(record.rows)
            return None
        key = (record.model, record.version, record.sha256)
        schema = self._schemas.get(key)
        if schema is None:
            schema = self._schemas[key] = Schema.build(record, pii)
        self._pending_schemas[schema.key] = schema
        return encode_prediction(record, schema, pii)

    async def append_rejected(self, record: RejectedRecord) -> None:
        # The client already gets an error; a log failure here is counted and visible.
        error, body = self._policies.rejected(record)
        with contextlib.suppress(LogUnavailable):
            await self._submit(encode_rejected(record, error, body), 1, REJECTED)

    async def append_feedback(
        self, model: str, items: list[tuple[str, int, str]], source: str
    ) -> None:
        frame = encode_feedback(model, time.time(), items, source)
        await self._submit(frame, len(items), FEEDBACK)

    async def _submit(self, frame: bytes, rows: int, table: str) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append(frame)
        self._waiters.append(fut)
        self._pending_rows += rows
        self._spooled[table].inc(rows)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        frames, waiters, rows = self._pending, self._waiters, self._pending_rows
        schemas = self._pending_schemas
        self._pending, self._waiters, self._pending_rows = [], [], 0
        self._pending_schemas = {}
        if not frames:
            return
        new: list[str] = []
        try:
            if self._segments is None:
                self._segments = _Segments(
                    self.settings.spool_dir, self.settings.spool_segment_bytes
                )
            seg = self._segments
            # A segment is read on its own: declare each schema in it before first use.
            new = [k for k in schemas if k not in seg.declared]
            head = [schemas[k].frame() for k in new]
            seg.declared.update(new)
            seg.write(b"".join(head + frames) if head else b"".join(frames))
        except OSError as exc:
            if self._segments is not None:
                self._segments.declared.difference_update(new)
            self._fail(waiters, rows, f"cannot write the spool: {exc.strerror or exc}")
            return
        if not self._healthy:
            self._set_health(True, "ok")
        if self.settings.fsync is FsyncPolicy.ALWAYS:
            asyncio.get_running_loop().create_task(self._fsync_then_release(waiters, rows))
        else:
            _release(waiters)

    async def _fsync_then_release(self, waiters: list[asyncio.Future[None]], rows: int) -> None:
        try:
            assert self._segments is not None
            await asyncio.to_thread(self._segments.fsync)
        except OSError as exc:
            self._fail(waiters, rows, f"cannot fsync the spool: {exc.strerror or exc}")
            return
        _release(waiters)

    def _fail(self, waiters: list[asyncio.Future[None]], rows: int, reason: str) -> None:
        self.metrics.iolog_failures.labels("spool").inc()
        self._set_health(False, reason)
        if self.settings.on_log_failure is OnLogFailure.SERVE:
            self.metrics.iolog_unlogged.inc(rows)
            _release(waiters)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_exception(
                    LogUnavailable(f"I/O log unavailable, request not served: {reason}")
                )

    # -- background ----------------------------------------------------------------------------
    async def _fsync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.fsync_interval_s)
            if self._segments is not None and self._segments.fd is not None:
                try:
                    await asyncio.to_thread(self._segments.fsync)
                except OSError as exc:
                    log.error("periodic spool fsync failed: %s", exc)
                    self.metrics.iolog_failures.labels("fsync").inc()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.settings.compact_interval_s)
            try:
                if not self._healthy:
                    await asyncio.to_thread(self._probe)
                seg = self._segments
                if seg is not None and seg.age() >= self.settings.spool_segment_seconds:
                    seg.rotate()
                await self._deliver_all()
            except Exception:
                log.exception("I/O log maintenance failed")
                self.metrics.iolog_failures.labels("deliver").inc()

    def _probe(self) -> None:
        """While failing, check whether the spool is writable again (space freed, permissions)."""
        probe = self.settings.spool_dir / f".probe-{os.getpid()}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink()
            self._reason = f"spool still not writable: {exc.strerror or exc}"
            return
        self._set_health(True, "ok")

    async def _deliver_all(self) -> None:
        async with self._deliver_lock:
            if self._deliverer.try_lead():
                await asyncio.to_thread(self._deliverer.run_once)


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
