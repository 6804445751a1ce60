"""Row keys as 64-bit hashes, and the ground-truth labels joined onto predictions by them.

A window of millions of rows cannot keep its ``(request_id, row)`` keys as Python objects; a
64-bit hash per key costs 8 bytes, and two keys of a 10 M-row window collide with odds of about
3 in a million million (2⁻⁶⁴ · n²/2), which we accept for de-duplication and the label join.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_COMPACT_EVERY = 1_000_000  # labels gathered before duplicates are folded away


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: every input bit flips about half the output's."""
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


def text_hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per string of ``column``, read from its Arrow buffers eight bytes at a time:
    no Python string is made (pandas' ``hash_array`` needed them all, and its import). A null
    hashes as the empty string. Not a defence against chosen collisions: none is needed, since a
    client who can pick a request id can as well send one already used (``X-Request-ID``)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_large_string(column.type):
        column = column.cast(pa.large_string())  # one offset width below; a no-op for ids
    n = len(column)
    _validity, offset_buf, data = column.buffers()
    offsets = np.frombuffer(offset_buf, np.int64, n + 1, column.offset * 8)
    start, length = offsets[:-1], np.diff(offsets)
    with np.errstate(over="ignore"):  # wrapping arithmetic is the point of a hash
        h = _mix(length.astype(np.uint64) * _GOLDEN + np.uint64(1))
        first, end = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
        if data is None or end == first:
            return h
        padded = np.zeros(end - first + 8, np.uint8)  # a slice's bytes only
        padded[: end - first] = np.frombuffer(data, np.uint8, end - first, first)
        start = start - first
        # the 8 bytes from each position, little-endian (unaligned views of one buffer)
        words = np.ndarray((end - first + 1,), "<u8", padded, 0, (1,))
        shortest = int(length.min())
        for k in range(0, int(length.max()), 8):
            # only the strings not yet ended: a hash must not depend on its neighbours' lengths
            at = slice(None) if k < shortest else np.flatnonzero(length > k)
            rest = length[at] - k
            word = words[start[at] + k]
            short = rest < 8  # the string ends in this word: drop the bytes that follow
            if short.any():
                word[short] &= (np.uint64(1) << (rest[short].astype(np.uint64) * 8)) - 1
            h[at] = _mix(h[at] ^ word) + np.uint64(k)
    return h


def key_hashes(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """One uint64 per row of ``batch`` from its ``request_id`` and ``row`` columns."""
    h = text_hashes(batch.column("request_id"))
    rows = batch.column("row").to_numpy(zero_copy_only=False).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(h ^ (rows * _GOLDEN + np.uint64(0x5BD1E995)))


def row_keys(batch: pa.RecordBatch | pa.Table, hashes: np.ndarray | None = None) -> np.ndarray:
    """The key of a logged row: ``key_hashes`` of its (request_id, row) (``hashes`` if given),
    mixed with its role when that is not primary, so that a shadow row and the primary row of
    the same request are two rows (and old files, without roles, keep their keys). Labels join
    on ``key_hashes``."""
    h = key_hashes(batch) if hashes is None else hashes
    if "role" not in batch.schema.names:
        return h
    role = batch.column("role")
    if isinstance(role, pa.ChunkedArray):
        role = role.combine_chunks()
    other = pc.fill_null(pc.not_equal(role, "primary"), False)  # null: logged before roles
    if not pc.any(other).as_py():
        return h
    mask = other.to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):
        h = h.copy()
        h[mask] ^= text_hashes(role)[mask] * _GOLDEN + np.uint64(1)
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
        keys, first = _first_of_each(hashes)
        new = np.ones(len(keys), dtype=bool)
        for run in self._runs:  # sorted needles: the searches walk each run once, in order
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            new &= run[pos] != keys
        mask = np.zeros(len(hashes), dtype=bool)
        mask[first[new]] = True
        if new.any():
            self._runs.append(keys[new])
        while len(self._runs) > 1 and len(self._runs[-1]) >= len(self._runs[-2]):
            last, before = self._runs.pop(), self._runs.pop()
            # Two sorted runs: the stable sort (timsort) merges them in linear time.
            self._runs.append(np.sort(np.concatenate([before, last]), kind="stable"))
        return mask


def _first_of_each(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``hashes``, sorted, and where each first occurs: ``np.unique``'s
    answer, from an unstable argsort (several times faster) when no value repeats, as is usual."""
    order = np.argsort(hashes)
    keys = hashes[order]
    if not (keys[1:] == keys[:-1]).any():
        return keys, order
    keys, first = np.unique(hashes, return_index=True)
    return keys, first


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


def in_force(keys: np.ndarray, received: np.ndarray) -> np.ndarray:
    """Positions of the labels in force, sorted by key: per key, the latest ``received``; of
    labels received in the same instant, the one at the later position (read order). The one
    rule for which label counts, wherever labels are read."""
    seq = np.arange(len(keys))
    order = np.lexsort((seq, received, keys))
    sorted_keys = keys[order]
    last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
    positions: np.ndarray = order[last]
    return positions


def labels_in_force(feedback: pd.DataFrame) -> pd.DataFrame:
    """The rows of a feedback frame (request_id, row, received_at, in the order they were sent)
    whose label is in force, in their original order."""
    keys = key_hashes(pa.table({"request_id": feedback["request_id"].astype(str),
                                "row": feedback["row"].astype("int64")}))  # fmt: skip
    received = feedback["received_at"].astype("int64").to_numpy()
    return feedback.iloc[np.sort(in_force(keys, received))]


def _fold(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entry per key, the latest; sorted by key for ``Labels.lookup``."""
    keys = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    codes = np.concatenate([p[2] for p in parts])
    last = in_force(keys, ts)
    return keys[last], ts[last], codes[last]
