"""A request deadline for the hot path.

``asyncio.timeout`` costs ~8 % of a single-row prediction in the profile (its state machine,
``reschedule`` and ``current_task`` bookkeeping are Python); this is one timer handle and a flag.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``with Deadline(s):`` inside a task: if the block is still running after ``s`` seconds,
    the task is cancelled at its await and the block raises ``TimeoutError`` instead.

    Like ``asyncio.timeout``, it relies on the block not swallowing ``CancelledError``.
    """

    __slots__ = ("_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._handle = asyncio.get_running_loop().call_later(self._delay, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if self._expired:
            self._task.uncancel()
            if exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
