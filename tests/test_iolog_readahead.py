"""Reading ahead and writing behind in a thread: order, errors and an early stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from service.iolog.readahead import WriteBehind, read_ahead


def _counting(n: int, fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"item {i} unreadable")
        yield i


def test_read_ahead_gives_every_item_in_order() -> None:
    assert list(read_ahead(_counting(1_000), depth=3)) == list(range(1_000))
    assert list(read_ahead(iter([]))) == []


def test_read_ahead_raises_the_producers_error_after_the_items_before_it() -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="item 5 unreadable"):
        got.extend(read_ahead(_counting(10, fail_at=5)))
    assert got == [0, 1, 2, 3, 4]


def test_closing_read_ahead_early_stops_its_thread() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = read_ahead(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert threading.active_count() == before
    assert len(produced) <= 3 + 2 + 1  # what was taken, the queue, one blocked in hand


def _write_all(write_one: Callable[[int], None], n: int) -> None:
    with WriteBehind(write_one, depth=2) as write:
        for i in range(n):
            write(i)


def test_write_behind_writes_in_order_and_raises_the_writers_error() -> None:
    written: list[int] = []
    _write_all(written.append, 500)
    assert written == list(range(500))

    def fails(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        written.append(i)

    written.clear()
    with pytest.raises(OSError, match="disk full"):
        _write_all(fails, 100)
    assert written == [0, 1, 2]


def test_write_behind_lets_the_callers_own_error_through() -> None:
    def fails(_: int) -> None:
        raise OSError("disk full")

    def read_fails_while_writing() -> None:
        with WriteBehind(fails) as write:
            write(1)
            raise KeyError("the reader failed first")

    with pytest.raises(KeyError):
        read_fails_while_writing()
