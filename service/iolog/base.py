"""The interface the data plane logs through, and the implementation for logging turned off."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.errors import LogUnavailable
from service.iolog.record import IORecord, RejectedRecord


class IOLog(Protocol):
    async def append(self, record: IORecord) -> None:
        """Return once the record is durable per the fsync policy; raise LogUnavailable if not."""

    async def append_many(self, records: Sequence[IORecord]) -> None:
        """``append`` for records that must be durable together (a primary row and its shadow):
        one write, all or none."""

    async def append_rejected(self, record: RejectedRecord) -> None: ...

    async def append_feedback(
        self, model: str, items: list[tuple[str, int, str]], source: str
    ) -> None:
        """Durably record ground-truth labels, (request_id, row, label) per item, and who sent
        them (``source``: ``token`` or ``anonymous``, as ``POST /v1/feedback`` decides)."""

    def health(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Flush everything acknowledged and hand it to the store."""


class DisabledIOLog:
    """VIGIL_IOLOG_ENABLED=false: nothing is recorded (the benchmark's 'logging off' variant)."""

    async def append(self, record: IORecord) -> None:
        return None

    async def append_many(self, records: Sequence[IORecord]) -> None:
        return None

    async def append_rejected(self, record: RejectedRecord) -> None:
        return None

    async def append_feedback(
        self, model: str, items: list[tuple[str, int, str]], source: str
    ) -> None:
        raise LogUnavailable("feedback needs the I/O log, which is disabled (VIGIL_IOLOG_ENABLED)")

    def health(self) -> tuple[bool, str]:
        return True, "I/O logging disabled"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
