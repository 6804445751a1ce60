"""The hot path's request deadline behaves like asyncio.timeout where requests rely on it."""

from __future__ import annotations

import asyncio

import pytest

from service.http.deadline import Deadline


async def _stalled_then_continue() -> str:
    with pytest.raises(TimeoutError), Deadline(0.05):
        await asyncio.sleep(5)
    await asyncio.sleep(0.01)  # the task is usable afterwards: the cancellation was consumed
    return "went on"


def test_a_block_past_its_deadline_raises_timeout_and_the_task_goes_on() -> None:
    assert asyncio.run(asyncio.wait_for(_stalled_then_continue(), 3)) == "went on"


async def _in_time() -> str:
    with Deadline(0.05):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.15)  # past the deadline: its timer must have been cancelled
    return "done"


def test_a_block_in_time_leaves_no_timer_behind() -> None:
    assert asyncio.run(asyncio.wait_for(_in_time(), 3)) == "done"


async def _cancelled_from_outside() -> None:
    async def request() -> None:
        with Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    task.cancel()  # e.g. server shutdown: not a timeout
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    asyncio.run(asyncio.wait_for(_cancelled_from_outside(), 3))
