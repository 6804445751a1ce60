"""The label join: the latest label per (request_id, row) wins, whatever the history holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from service.iolog.labels import SeenKeys, key_hashes, latest_labels, text_hashes
from service.iolog.schema import FEEDBACK_SCHEMA

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _labels(items: list[tuple[str, int, str, int]]) -> pa.Table:
    return pa.table(
        {
            "request_id": [i[0] for i in items],
            "row": pa.array([i[1] for i in items], pa.int32()),
            "label": [i[2] for i in items],
            "received_at": [T0 + timedelta(seconds=i[3]) for i in items],
            "source": ["token"] * len(items),
        },
        schema=FEEDBACK_SCHEMA,
    )


def test_the_latest_label_wins_across_batches_and_ties_go_to_the_later_read() -> None:
    history = [
        _labels([("a", 0, "benign", 5), ("b", 0, "benign", 1), ("a", 1, "benign", 1)]),
        _labels([("a", 0, "malignant", 3)]),  # older than the first: loses
        _labels([("b", 0, "malignant", 1)]),  # same instant, read later: wins
    ]
    index = latest_labels(history)
    keys = pa.table({"request_id": ["a", "b", "a", "c"], "row": pa.array([0, 0, 1, 0], pa.int32())})
    got = index.lookup(key_hashes(keys)).to_pylist()
    assert got == ["benign", "malignant", "benign", None]
    assert len(index) == 3


def test_seen_keys_pass_each_key_once() -> None:
    seen = SeenKeys()
    first = pa.table({"request_id": ["x", "y", "x"], "row": pa.array([0, 0, 0], pa.int32())})
    second = pa.table({"request_id": ["y", "z"], "row": pa.array([0, 0], pa.int32())})
    assert seen.fresh(key_hashes(first)).tolist() == [True, True, False]
    assert seen.fresh(key_hashes(second)).tolist() == [False, True]
    # (request_id, row) is the key: the same id on another row is another record
    other_row = pa.table({"request_id": ["x"], "row": pa.array([1], pa.int32())})
    assert seen.fresh(key_hashes(other_row)).tolist() == [True]
    assert np.unique(key_hashes(first)).size == 2


def test_seen_keys_agree_with_a_set_over_many_batches() -> None:
    # Many batches of random sizes with repeats inside and across them: the runs merge in
    # several patterns, and every answer must equal what a plain set would say.
    rng = np.random.default_rng(7)
    seen, reference = SeenKeys(), set()
    for _ in range(60):
        hashes = rng.integers(0, 5_000, size=int(rng.integers(1, 400)), dtype=np.uint64)
        expected = []
        for h in hashes.tolist():
            expected.append(h not in reference)
            reference.add(h)
        assert seen.fresh(hashes).tolist() == expected


def test_text_hashes_depend_on_the_text_only() -> None:
    # Lengths around the 8-byte words, prefixes, a NUL, non-ASCII: all distinct.
    texts = ["", "a", "a\x00", "ab", "abcdefg", "abcdefgh", "abcdefghi", "abcdefgh\x00"]
    texts += ["é", "e\u0301", "x" * 127, "x" * 128, "w0-1", "w0-10", "w1-0"]
    hashes = text_hashes(pa.array(texts)).tolist()
    assert len(set(hashes)) == len(texts)
    # The same text hashes the same in a slice, a chunked column and a large_string array.
    assert text_hashes(pa.array(texts).slice(3, 4)).tolist() == hashes[3:7]
    chunked = pa.chunked_array([pa.array(texts[:5]), pa.array(texts[5:])])
    assert text_hashes(chunked).tolist() == hashes
    assert text_hashes(pa.array(texts, pa.large_string())).tolist() == hashes
    assert text_hashes(pa.array([], pa.string())).tolist() == []


def test_row_keys_of_many_random_ids_do_not_collide() -> None:
    rng = np.random.default_rng(3)
    ids = [f"{rng.integers(0, 10**12):x}-{i % 7}" for i in range(50_000)]
    keys = pa.table({"request_id": ids, "row": pa.array(rng.integers(0, 4, len(ids)), pa.int32())})
    distinct = len(set(zip(ids, keys.column("row").to_pylist(), strict=True)))
    assert np.unique(key_hashes(keys)).size == distinct
