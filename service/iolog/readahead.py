"""Iterating in a thread of its own, a few items ahead of the consumer.

Reading the log (object-store round trips, decompression) and using what was read (hashing keys,
writing the export) each wait on something the other could be doing meanwhile; pyarrow releases
the GIL while it reads, decodes and encodes, so two threads overlap them. ``depth`` bounds what is
held ahead, so memory stays bounded by a few batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """``items``, produced by a thread up to ``depth`` ahead; an exception raised there is raised
    here, in order; closing this iterator early stops the thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(q, item, stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which raises it
            _put(q, _Failed(exc), stop)

    thread = threading.Thread(target=produce, name="vigil-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(T, item)
    finally:
        stop.set()
        thread.join()


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class WriteBehind(Generic[T]):
    """A context whose ``write(item)`` returns at once while a thread writes the items, in order,
    up to ``depth`` behind. Leaving it waits for the last write and raises the first error the
    thread met (unless an error is already on its way out)."""

    def __init__(self, write: Callable[[T], None], depth: int = 2) -> None:
        self._write = write
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vigil-write-behind", daemon=True)

    def __enter__(self) -> Callable[[T], None]:
        self._thread.start()
        return self._put

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._q.put(_DONE)
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

    def _put(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def _run(self) -> None:
        while (item := self._q.get()) is not _DONE:
            if self._error is None:  # after an error, drain: the producer must not block
                try:
                    self._write(cast(T, item))
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc
