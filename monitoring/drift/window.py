"""What drift needs of a window, gathered while the log streams by: never the window itself.

A seeded uniform sample of at most ``max_rows`` rows (bottom-k sampling: each row draws a random
key, the k smallest keys stay, which is reservoir sampling done a batch at a time), every labelled
row's label, prediction and probabilities (performance is judged on all of them, not the sample),
the number of rows, and which numeric columns held a finite value anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_store.registration import PREDICTION_COLUMN

FEEDBACK_COLUMN = "label"
_ORDER = "__order"


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

    def add(self, part: pd.DataFrame) -> None:
        n = len(part)
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
            part, keys, order = part.iloc[chosen], keys[chosen], order[chosen]
        part = part.reset_index(drop=True)
        part[_ORDER] = order
        self._parts.append(part)
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

    def _note_finite(self, part: pd.DataFrame) -> None:
        for name in part.columns:
            col = part[name]
            if (
                name not in self._finite
                and pd.api.types.is_numeric_dtype(col)
                and np.isfinite(col.to_numpy(dtype=np.float64)).any()
            ):
                self._finite.add(name)

    def _keep_labelled(self, part: pd.DataFrame) -> None:
        if FEEDBACK_COLUMN not in part.columns or PREDICTION_COLUMN not in part.columns:
            return
        mask = part[FEEDBACK_COLUMN].notna() & part[PREDICTION_COLUMN].notna()
        if mask.any():
            cols = [FEEDBACK_COLUMN, PREDICTION_COLUMN,
                    *(c for c in part.columns if c.startswith("proba_"))]  # fmt: skip
            self._labelled.append(part.loc[mask, cols])

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
