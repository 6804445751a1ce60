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
    their order (the random keys come from one seeded stream), not on how they were split."""

    def __init__(self, max_rows: int, seed: int) -> None:
        self._k = max_rows
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._sample: pd.DataFrame | None = None
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
        if self._sample is not None and len(self._keys) >= self._k:
            # a full sample keeps only keys below its largest: the rest could never be chosen,
            # so most of a big window's rows are dropped here, before any copy
            candidates = np.flatnonzero(keys < self._keys.max())
            part, keys, order = part.iloc[candidates], keys[candidates], order[candidates]
        part = part.reset_index(drop=True)
        part[_ORDER] = order
        if self._sample is not None:
            part = pd.concat([self._sample, part], ignore_index=True)
            keys = np.concatenate([self._keys, keys])
        if len(part) > self._k:
            keep = np.argpartition(keys, self._k - 1)[: self._k]
            part, keys = part.iloc[keep].reset_index(drop=True), keys[keep]
        self._sample, self._keys = part, keys

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
        if self._sample is None:
            sample = pd.DataFrame()
        else:  # back in window order, as the rows were read
            sample = self._sample.sort_values(_ORDER).drop(columns=_ORDER).reset_index(drop=True)
        labelled = (
            pd.concat(self._labelled, ignore_index=True)
            if self._labelled
            else pd.DataFrame(columns=[FEEDBACK_COLUMN, PREDICTION_COLUMN])
        )
        return WindowSample(self.rows, sample, labelled, frozenset(self._finite - {_ORDER}))
