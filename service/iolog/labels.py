"""Row keys as 64-bit hashes, and the ground-truth labels joined onto predictions by them.

A window of millions of rows cannot keep its ``(request_id, row)`` keys as Python objects; a
64-bit hash per key costs 8 bytes, and two keys of a 10 M-row window collide with odds of about
3 in a million million (2⁻⁶⁴ · n²/2), which we accept for de-duplication and the label join.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_COMPACT_EVERY = 1_000_000  # labels gathered before duplicates are folded away


def key_hashes(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """One uint64 per row of ``batch`` from its ``request_id`` and ``row`` columns."""
    ids = batch.column("request_id").to_numpy(zero_copy_only=False)
    rows = batch.column("row").to_numpy(zero_copy_only=False).astype(np.uint64)
    h = pd.util.hash_array(ids, categorize=False)
    with np.errstate(over="ignore"):  # wrapping arithmetic is the point of a hash
        mixed = h ^ (pd.util.hash_array(rows) + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2)))
    return np.asarray(mixed, dtype=np.uint64)


def row_keys(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The key of a logged row: ``key_hashes`` of its (request_id, row), mixed with its role
    when that is not primary, so that a shadow row and the primary row of the same request are
    two rows (and old files, without roles, keep their keys). Labels join on ``key_hashes``."""
    h = key_hashes(batch)
    if "role" not in batch.schema.names:
        return h
    role = batch.column("role")
    if isinstance(role, pa.ChunkedArray):
        role = role.combine_chunks()
    roles = role.fill_null("primary").to_numpy(zero_copy_only=False)
    other = roles != "primary"
    if other.any():
        with np.errstate(over="ignore"):
            salt = pd.util.hash_array(roles[other].astype(object), categorize=False)
            h = h.copy()
            h[other] = h[other] ^ (salt * _GOLDEN + np.uint64(1))
    return h


class SeenKeys:
    """Keys already emitted, so a record read twice (spool and store) counts once.

    The keys are kept as a few sorted runs whose sizes at least halve from one to the next (a new
    run is merged into the one before while it is as large): every key is merged O(log n) times,
    so a window of n keys costs O(n log n) in all, where one sorted array re-sorted per batch cost
    O(n²/batch) (17 s of a 10 M-row drift run).
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def fresh(self, hashes: np.ndarray) -> np.ndarray:
        """Mask of the rows whose key was not seen before (nor earlier in ``hashes``); marks
        them seen."""
        _, first = np.unique(hashes, return_index=True)
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first] = True
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            mask &= run[pos] != hashes
        new = np.sort(hashes[mask])
        if len(new):
            self._runs.append(new)
        while len(self._runs) > 1 and len(self._runs[-1]) >= len(self._runs[-2]):
            last, before = self._runs.pop(), self._runs.pop()
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            self._runs.append(np.sort(np.concatenate([before, last]), kind="stable"))
        return mask


class Labels:
    """The label of each labelled row key: ``lookup`` gives a string array, null if none."""

    def __init__(self, keys: np.ndarray, codes: np.ndarray, names: list[str]) -> None:
        self._keys, self._codes = keys, codes
        self._names = pa.array(names, pa.string())

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, hashes: np.ndarray) -> pa.Array:
        if not len(self._keys):
            return pa.nulls(len(hashes), pa.string())
        pos = np.minimum(np.searchsorted(self._keys, hashes), len(self._keys) - 1)
        found = self._keys[pos] == hashes
        codes = pa.array(self._codes[pos], pa.int32(), mask=~found)
        return self._names.take(codes)


def latest_labels(feedback: Iterable[pa.RecordBatch | pa.Table]) -> Labels:
    """The latest label per ``(request_id, row)`` wins: the one received last, and of two received
    in the same instant the one read last. ``feedback`` has request_id, row, label, received_at."""
    names: dict[str, int] = {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # key, received_at, code
    pending = 0
    for batch in feedback:
        if not batch.num_rows:
            continue
        encoded = batch.column("label")
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        encoded = encoded.dictionary_encode()
        remap = np.array(
            [names.setdefault(s, len(names)) for s in encoded.dictionary.to_pylist()], np.int32
        )
        ts = batch.column("received_at").cast(pa.int64()).to_numpy(zero_copy_only=False)
        parts.append((key_hashes(batch), ts, remap[encoded.indices.to_numpy()]))
        pending += batch.num_rows
        if pending >= _COMPACT_EVERY:
            parts, pending = [_fold(parts)], 0
    if not parts:
        return Labels(np.empty(0, np.uint64), np.empty(0, np.int32), [])
    keys, _ts, codes = _fold(parts)
    return Labels(keys, codes, list(names))


def _fold(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entry per key, the latest; sorted by key for ``Labels.lookup``."""
    keys = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    codes = np.concatenate([p[2] for p in parts])
    seq = np.arange(len(keys))  # read order breaks ties of received_at
    order = np.lexsort((seq, ts, keys))
    keys, ts, codes = keys[order], ts[order], codes[order]
    last = np.append(keys[1:] != keys[:-1], True)
    return keys[last], ts[last], codes[last]
