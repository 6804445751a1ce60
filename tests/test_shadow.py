"""Shadow runs batched per event-loop turn: one candidate call, and each request its own rows,
its own answer or its own failure, as if it had run alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from model_store.store import ModelStore
from service.core.loaded_model import LoadedModel, session_options
from service.core.registry import ModelRegistry
from service.core.shadow import Shadow, ShadowBatcher, _chunks, shadow_run
from tests.conftest import MODEL
from tests.faulty_model import THRESHOLD, register_faulty

Row = dict[str, float]


def _load(store: ModelStore, version: int) -> LoadedModel:
    registry = ModelRegistry(store, session_options(1, 1))
    try:
        return registry.get(MODEL, version)
    finally:
        registry.close()


def _inputs(rows: list[Row], sizes: list[int]) -> list[np.ndarray]:
    matrix = np.asarray([list(r.values()) for r in rows], dtype=np.float64)
    out, start = [], 0
    for n in sizes:
        out.append(matrix[start : start + n])
        start += n
    return out


async def _one_turn(
    batcher: ShadowBatcher, model: LoadedModel, xs: list[np.ndarray]
) -> list[Shadow]:
    """Every run submitted in the same turn, as concurrent requests do."""
    futures = [batcher.run(model, x) for x in xs]
    shadows = list(await asyncio.gather(*futures))
    await asyncio.sleep(0)  # the turn is over: the batcher has counted it
    return shadows


async def _busy(batcher: ShadowBatcher, model: LoadedModel, rows: list[Row]) -> list[Shadow]:
    """One turn with several shadow runs (run at once): the batcher batches from the next."""
    return await _one_turn(batcher, model, _inputs(rows[-2:], [1, 1]))


def _shared(shadows: list[Shadow], sizes: list[int]) -> bool:
    """Whether the runs shared one call: each one's time is its share of it, by rows."""
    per_row = [s.seconds / n for s, n in zip(shadows, sizes, strict=True)]
    return max(per_row) == pytest.approx(min(per_row), rel=1e-9)


def test_runs_of_one_turn_share_one_call_and_get_their_own_rows(
    store: ModelStore, rows: list[Row]
) -> None:
    candidate = _load(store, 2)
    sizes = [1, 3, 1, 2, 1, 1, 5, 1]
    xs = _inputs(rows, sizes)
    batcher = ShadowBatcher(256)

    async def busy_then_batched() -> list[Shadow]:
        await _busy(batcher, candidate, rows)
        return await _one_turn(batcher, candidate, xs)

    shadows = asyncio.run(busy_then_batched())
    for x, shadow in zip(xs, shadows, strict=True):
        alone = shadow_run(candidate, x)
        assert shadow.error is None and shadow.pred is not None and alone.pred is not None
        assert shadow.x is x and shadow.model is candidate
        np.testing.assert_array_equal(shadow.pred.labels, alone.pred.labels)
        # onnxruntime's kernels may round a row differently within a batch: float32 ulps only
        np.testing.assert_allclose(shadow.pred.probabilities, alone.pred.probabilities, atol=1e-6)
    assert _shared(shadows, sizes)


def test_a_failing_row_fails_only_its_own_request(store: ModelStore, rows: list[Row]) -> None:
    faulty = _load(store, register_faulty(store, MODEL, 1))
    sizes = [1] * 12 + [2, 2]
    xs = _inputs(rows, sizes)
    bad = [bool((x[:, 0] <= THRESHOLD).any()) for x in xs]  # mean_radius is the first feature
    assert any(bad) and not all(bad)
    batcher = ShadowBatcher(256)

    async def busy_then_batched() -> list[Shadow]:
        await _busy(batcher, faulty, rows)
        return await _one_turn(batcher, faulty, xs)

    shadows = asyncio.run(busy_then_batched())
    for x, shadow, fails in zip(xs, shadows, bad, strict=True):
        if fails:
            assert shadow.pred is None and shadow.error is not None
            assert "not finite" in shadow.error
        else:
            alone = shadow_run(faulty, x)
            assert shadow.error is None and shadow.pred is not None and alone.pred is not None
            np.testing.assert_allclose(
                shadow.pred.probabilities, alone.pred.probabilities, atol=1e-6
            )


def test_runs_of_later_turns_are_batched_apart(store: ModelStore, rows: list[Row]) -> None:
    candidate = _load(store, 2)
    batcher = ShadowBatcher(256)

    async def two_turns() -> tuple[list[Shadow], list[Shadow]]:
        await _busy(batcher, candidate, rows)
        first = await _one_turn(batcher, candidate, _inputs(rows, [1, 1]))
        second = await _one_turn(batcher, candidate, _inputs(rows[2:], [1, 1, 1]))
        return first, second

    first, second = asyncio.run(two_turns())
    assert [s.error for s in first + second] == [None] * 5
    assert _shared(first, [1, 1]) and _shared(second, [1, 1, 1])
    assert not _shared(first + second, [1] * 5)


def test_a_lone_run_does_not_wait_a_turn(store: ModelStore, rows: list[Row]) -> None:
    """At low load (one connection) there is nothing to share a call with: waiting a turn would
    only add latency. A turn with a lone batched run switches back to running at once."""
    candidate = _load(store, 2)
    batcher = ShadowBatcher(256)
    x = _inputs(rows, [1])[0]

    async def scenario() -> tuple[bool, bool, bool]:
        first = batcher.run(candidate, x).done()  # a fresh batcher runs at once
        await asyncio.sleep(0)
        await _busy(batcher, candidate, rows)
        lone = batcher.run(candidate, x)
        batched = not lone.done()  # busy before: it waits for the next turn
        await lone
        await asyncio.sleep(0)
        return first, batched, batcher.run(candidate, x).done()

    assert asyncio.run(scenario()) == (True, True, True)


def test_a_call_holds_at_most_max_rows_unless_one_request_is_larger() -> None:
    items = [(np.zeros((n, 1)), n) for n in (3, 2, 1, 5, 1, 1)]
    chunks = _chunks(items, 4)
    assert [[n for _, n in chunk] for chunk in chunks] == [[3], [2, 1], [5], [1, 1]]
