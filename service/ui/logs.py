"""The Logs page: a window's row count, a preview, and the download streamed from a thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from service.iolog.export import write_export
from service.iolog.reader import open_predictions
from service.settings import Settings

PREVIEW_ROWS = 100
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Window:
    model: str
    version: int | None
    since: datetime | None
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Preview:
    rows: int
    columns: list[str]
    head: list[list[Any]]


def count(settings: Settings, w: Window) -> int:
    stream = open_predictions(
        settings, w.model, w.version, w.since, w.until, with_labels=False, columns=[],
        store_unique=True,
    )  # fmt: skip
    return sum(b.num_rows for b in stream)


def preview(settings: Settings, w: Window) -> Preview:
    """How many rows the window holds and its first ``PREVIEW_ROWS`` as logged (hashed PII
    columns hold their hashes; dropped ones are absent), the label joined as in the export.
    The count runs in a second thread: both reads spend their time in Arrow, outside the GIL."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-ui-count") as pool:
        rows = pool.submit(count, settings, w)
        stream = open_predictions(
            settings, w.model, w.version, w.since, w.until, batch_rows=PREVIEW_ROWS
        )
        batches: list[pa.RecordBatch] = []
        for batch in stream:
            batches.append(batch)
            if sum(b.num_rows for b in batches) >= PREVIEW_ROWS:
                break
        table = pa.Table.from_batches(batches, stream.schema).slice(0, PREVIEW_ROWS)
        head = [list(r.values()) for r in table.to_pylist()]
        return Preview(rows.result(), stream.schema.names, head)


class _Closed(Exception):
    """The reader went away (the client disconnected): stop writing."""


class _Pipe:
    """A file the export writes into from a thread and an HTTP response reads from."""

    def __init__(self) -> None:
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._buf = bytearray()
        self._pos = 0
        self.closed = False
        self.abandoned = threading.Event()

    def write(self, data: bytes) -> int:
        self._buf += data
        self._pos += len(data)
        if len(self._buf) >= CHUNK_BYTES:
            self._put(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True  # the writer closes its sink; the end is sent by finish()

    def finish(self, error: BaseException | None) -> None:
        if self._buf and error is None:
            self._put(bytes(self._buf))
        self._buf.clear()
        self._put(error)

    def _put(self, item: bytes | BaseException | None) -> None:
        while True:
            if self.abandoned.is_set():
                raise _Closed
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def get(self) -> bytes | BaseException | None:
        return self._q.get()


def stream_export(settings: Settings, w: Window, suffix: str) -> tuple[_Pipe, threading.Thread]:
    """Start writing the window's export (the bytes ``vigil logs export`` writes) into a pipe."""
    pipe = _Pipe()

    def work() -> None:
        error: BaseException | None = None
        try:
            stream = open_predictions(settings, w.model, w.version, w.since, w.until)
            write_export(stream, pipe, suffix)  # type: ignore[arg-type]
        except _Closed:
            return
        except Exception as exc:
            error = exc
        try:
            pipe.finish(error)
        except _Closed:
            return

    thread = threading.Thread(target=work, name="vigil-ui-export", daemon=True)
    thread.start()
    return pipe, thread


def chunks(pipe: _Pipe) -> Iterator[bytes]:
    """The pipe's chunks until the end; an export error is raised (a truncated download)."""
    try:
        while True:
            item = pipe.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pipe.abandoned.set()
