"""What drift needs of a window, gathered while the log streams by: never the window itself.

A seeded uniform sample of at most ``max_rows`` rows (bottom-k sampling: each row draws a random
key, the k smallest keys stay, which is reservoir sampling done a batch at a time), every labelled
row's label, prediction and probabilities (performance is judged on all of them, not the sample),
the number of rows, and which numeric columns held a finite value anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from model_store.registration import PREDICTION_COLUMN

FEEDBACK_COLUMN = "label"
_ORDER = "__order"
Rows: TypeAlias = pd.DataFrame | pa.RecordBatch | pa.Table


@dataclass(frozen=True, slots=True)
class WindowSample:
    rows: int
    sample: pd.DataFrame
    labelled: pd.DataFrame
    finite: frozenset[str]

    @classmethod
    def of(cls, frame: pd.DataFrame, max_rows: int, seed: int) -> WindowSample:
        """The sample of a window already in memory (tests, the analysis benchmark)."""
        sampler = Sampler(max_rows, seed)
        sampler.add(frame)
        return sampler.result()


class Sampler:
    """Feed it a window's rows in any number of parts; the sample depends only on the rows and
    their order (the random keys come from one seeded stream), not on how they were split.
    Candidates are gathered until there are 2k and only then cut back to the k smallest keys,
    so a batch costs a copy of its few candidates, not of the whole sample."""

    def __init__(self, max_rows: int, seed: int) -> None:
        self._k = max_rows
        self._rng = np.random.default_rng(seed)
        self._parts: list[pd.DataFrame] = []  # the last sample, then the candidates since
        self._keys: list[np.ndarray] = []
        self._pending = 0
        self._bound = np.inf  # the largest key of a full sample: no larger key can be chosen
        self._labelled: list[pd.DataFrame] = []
        self._finite: set[str] = set()
        self.rows = 0

    def add(self, part: Rows) -> None:
        """Arrow rows are converted to pandas only where they are chosen or labelled."""
        n = len(part) if isinstance(part, pd.DataFrame) else part.num_rows
        if not n:
            return
        keys = self._rng.random(n)
        order = np.arange(self.rows, self.rows + n)
        self.rows += n
        self._note_finite(part)
        self._keep_labelled(part)
        # most of a big window's rows fall above the bound and are dropped here, before any copy
        chosen = np.flatnonzero(keys < self._bound)
        if not len(chosen):
            return
        if len(chosen) < n:
            keys, order = keys[chosen], order[chosen]
        frame = _take(part, chosen if len(chosen) < n else None)
        frame[_ORDER] = order
        self._parts.append(frame)
        self._keys.append(keys)
        self._pending += len(part)
        if self._pending >= 2 * self._k:  # shrink back to k rows once k candidates have come
            self._compact()

    def _compact(self) -> None:
        if len(self._parts) > 1:
            self._parts = [pd.concat(self._parts, ignore_index=True)]
            self._keys = [np.concatenate(self._keys)]
        if not self._parts:
            return
        (part,), (keys,) = self._parts, self._keys
        if len(part) > self._k:
            keep = np.argpartition(keys, self._k - 1)[: self._k]
            self._parts, self._keys = [part.iloc[keep].reset_index(drop=True)], [keys[keep]]
        if len(self._keys[0]) >= self._k:
            self._bound = float(self._keys[0].max())
        self._pending = len(self._keys[0])

    def _note_finite(self, part: Rows) -> None:
        if not isinstance(part, pd.DataFrame):
            self._finite.update(n for n in part.schema.names if _arrow_finite(part, n))
            return
        for name in part.columns:
            col = part[name]
            if (
                name not in self._finite
                and pd.api.types.is_numeric_dtype(col)
                and np.isfinite(col.to_numpy(dtype=np.float64)).any()
            ):
                self._finite.add(name)

    def _keep_labelled(self, part: Rows) -> None:
        names = list(part.columns if isinstance(part, pd.DataFrame) else part.schema.names)
        if FEEDBACK_COLUMN not in names or PREDICTION_COLUMN not in names:
            return
        cols = [FEEDBACK_COLUMN, PREDICTION_COLUMN, *(c for c in names if c.startswith("proba_"))]
        if not isinstance(part, pd.DataFrame):
            mask = pc.and_(
                pc.is_valid(part.column(FEEDBACK_COLUMN)),
                pc.is_valid(part.column(PREDICTION_COLUMN)),
            )
            if pc.any(mask).as_py():
                self._labelled.append(part.select(cols).filter(mask).to_pandas())
            return
        frame_mask = part[FEEDBACK_COLUMN].notna() & part[PREDICTION_COLUMN].notna()
        if frame_mask.any():
            self._labelled.append(part.loc[frame_mask, cols])

    def result(self) -> WindowSample:
        self._compact()
        if not self._parts:
            sample = pd.DataFrame()
        else:  # back in window order, as the rows were read
            sample = self._parts[0].sort_values(_ORDER).drop(columns=_ORDER).reset_index(drop=True)
        labelled = (
            pd.concat(self._labelled, ignore_index=True)
            if self._labelled
            else pd.DataFrame(columns=[FEEDBACK_COLUMN, PREDICTION_COLUMN])
        )
        return WindowSample(self.rows, sample, labelled, frozenset(self._finite - {_ORDER}))


def _take(part: Rows, rows: np.ndarray | None) -> pd.DataFrame:
    """``rows`` of ``part`` (all when None) as a new frame indexed from 0."""
    if isinstance(part, pd.DataFrame):
        return (part if rows is None else part.iloc[rows]).reset_index(drop=True)
    chosen = part if rows is None else part.take(pa.array(rows))
    return chosen.to_pandas()


def _arrow_finite(part: pa.RecordBatch | pa.Table, name: str) -> bool:
    """What the pandas path finds: a float column with a finite value, an integer column with
    a value (pandas makes NaN of its nulls), a boolean column without nulls."""
    col = part.column(name)
    kind = col.type
    if pa.types.is_floating(kind):
        return bool(pc.any(pc.is_finite(col)).as_py())
    if pa.types.is_integer(kind):
        return bool(col.null_count < len(col))
    if pa.types.is_boolean(kind):
        return bool(col.null_count == 0 and len(col) > 0)
    return False
