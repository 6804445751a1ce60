"""A rollout candidate's runs on copies of requests (shadow mode), batched per event-loop turn.

One onnxruntime call costs ~5 µs however few rows it scores: most of what a one-row request's
shadow run cost (~7 µs with its checks). Small shadowed requests of one event-loop turn (the
requests read from the sockets together) therefore wait one turn and share one call: the
candidate runs on their rows stacked, and each request gets its slice. Its time is its share of
the call, by rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.core.loaded_model import LoadedModel, Prediction
from service.core.validation import all_finite, check_prediction
from service.errors import InvalidInput
from service.iolog.frames import SHADOW

log = logging.getLogger("vigil.dataplane")


@dataclass(slots=True)
class Shadow:
    """The candidate's run on a copy of a request: its input, and its output or why it failed."""

    model: LoadedModel
    x: np.ndarray
    pred: Prediction | None
    error: str | None
    seconds: float  # the candidate's model time (or time to fail)
    role: str = SHADOW  # CANARY: a canary candidate that failed, the primary answered instead


def shadow_run(candidate: LoadedModel, x: np.ndarray) -> Shadow:
    """Run the candidate; any failure (exception, non-finite output) becomes the shadow's error."""
    start = time.perf_counter()
    try:
        pred = candidate.predict(x)
        check_prediction(pred, "instances")
    except Exception as exc:
        return failed_shadow(candidate, x, exc, time.perf_counter() - start)
    return Shadow(candidate, x, pred, None, pred.model_seconds)


def failed_shadow(candidate: LoadedModel, x: np.ndarray, exc: BaseException, s: float) -> Shadow:
    if not isinstance(exc, InvalidInput):
        log.warning("shadow candidate %s v%s failed: %r", candidate.name, candidate.version, exc)
    return Shadow(candidate, x, None, f"{type(exc).__name__}: {exc}"[:500], s)


def shadow_batch(candidate: LoadedModel, xs: list[np.ndarray]) -> list[Shadow]:
    """``shadow_run`` of each input, in one call of the candidate when all of it succeeds; else
    one by one, so that each request gets its own answer or its own failure."""
    if len(xs) == 1:
        return [shadow_run(candidate, xs[0])]
    try:
        pred = candidate.predict(np.concatenate(xs))
    except Exception:
        return [shadow_run(candidate, x) for x in xs]
    if not all_finite(pred.answers):
        return [shadow_run(candidate, x) for x in xs]
    out: list[Shadow] = []
    start, total = 0, len(pred.labels)
    for x in xs:
        stop = start + x.shape[0]
        seconds = pred.model_seconds * (stop - start) / total if total else 0.0
        out.append(Shadow(candidate, x, pred.rows(start, stop, seconds), None, seconds))
        start = stop
    return out


_Item = tuple[np.ndarray, "asyncio.Future[Shadow]"]
_T = TypeVar("_T")


class ShadowBatcher:
    """Collects the small shadow runs of one event-loop turn and runs them in the next, one
    candidate call per ``max_rows`` rows at most (like a request that size, it runs inline).

    Waiting a turn costs a request more than its share of a call saves when nothing else shares
    it (one connection: +7 µs of CPU a request in the in-process benchmark). So the batcher
    follows the traffic: after a turn with a single shadow run it runs the next ones at once,
    and after a turn with several of those it batches again.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._pending: dict[LoadedModel, list[_Item]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batching = False
        self._alone = 0  # shadow runs at once in this turn (while not batching)

    def run(self, candidate: LoadedModel, x: np.ndarray) -> asyncio.Future[Shadow]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the first run, or a new loop: runs left by a closed one
            self._loop, self._pending = loop, {}  # have no one waiting for them any more
            self._batching, self._alone = False, 0
        fut: asyncio.Future[Shadow] = loop.create_future()
        if not self._batching:
            if not self._alone:
                loop.call_soon(self._count_turn)
            self._alone += 1
            fut.set_result(shadow_run(candidate, x))  # done: awaiting it does not yield
            return fut
        if not self._pending:
            loop.call_soon(self._run_pending)
        self._pending.setdefault(candidate, []).append((x, fut))
        return fut

    def _count_turn(self) -> None:
        self._batching, self._alone = self._alone > 1, 0

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, {}
        self._batching = sum(map(len, pending.values())) > 1
        for candidate, items in pending.items():
            for chunk in _chunks(items, self.max_rows):
                try:
                    shadows = shadow_batch(candidate, [x for x, _ in chunk])
                except Exception as exc:  # never leave a request waiting
                    log.exception("shadow batch of %s v%s", candidate.name, candidate.version)
                    shadows = [failed_shadow(candidate, x, exc, 0.0) for x, _ in chunk]
                for (_, fut), shadow in zip(chunk, shadows, strict=True):
                    if not fut.done():  # its request was cancelled meanwhile
                        fut.set_result(shadow)


def _chunks(items: list[tuple[np.ndarray, _T]], max_rows: int) -> list[list[tuple[np.ndarray, _T]]]:
    """``items`` in order, in runs of at most ``max_rows`` rows (an item alone may be larger)."""
    chunks: list[list[tuple[np.ndarray, _T]]] = []
    rows = 0
    for item in items:
        n = item[0].shape[0]
        if not chunks or rows + n > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(item)
        rows += n
    return chunks
