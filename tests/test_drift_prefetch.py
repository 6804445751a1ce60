"""prefetch: the items in order, the producer's error raised to the consumer, an early exit
stops the thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from monitoring.drift.prefetch import prefetch


def test_items_come_in_order() -> None:
    assert list(prefetch(range(1000), depth=3)) == list(range(1000))


def test_the_producers_error_is_raised_after_what_came_before() -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("unreadable log file")

    stream = prefetch(broken())
    assert [next(stream), next(stream)] == [1, 2]
    with pytest.raises(OSError, match="unreadable"):
        next(stream)


def test_leaving_early_stops_the_thread() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "drift-prefetch" for t in threading.enumerate())
    assert len(produced) <= 5
