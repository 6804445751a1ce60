"""One column's drift verdict through Evidently's stattest registry.

These are the functions Evidently's ``ValueDrift`` and ``DataDriftPreset`` call for each column,
with the same cleaning (infinities and NaN dropped), so the numbers in drift.json equal those in
drift.html. Calling them directly costs milliseconds; a full Evidently report costs seconds of
plot rendering, which we pay once per run for the HTML only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import get_stattest
from evidently.legacy.core import ColumnType

from monitoring.drift.columns import CATEGORICAL, Kind
from monitoring.drift.result import ColumnDrift, Unseen


def _clean(values: pd.Series, kind: Kind) -> pd.Series:
    if kind == CATEGORICAL:  # categories compare as text, whatever dtype the frame gave them
        present = values.dropna()
        return present.astype(str)
    return values.replace([-np.inf, np.inf], np.nan).dropna()


def column_drift(
    reference: pd.Series, current: pd.Series, method: str, threshold: float, kind: Kind = "numeric"
) -> ColumnDrift:
    ref, cur = _clean(reference, kind), _clean(current, kind)
    if ref.empty or cur.empty:
        raise ValueError("no values to compare")
    column_type = ColumnType.Categorical if kind == CATEGORICAL else ColumnType.Numerical
    stattest = get_stattest(ref, cur, column_type, method)
    result = stattest(ref, cur, column_type, threshold)
    return ColumnDrift(
        score=float(result.drift_score),
        method=stattest.name,
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
    )


_SHOWN_UNSEEN = 5
_SHOWN_CHARS = 64


def unseen(current: pd.Series, categories: frozenset[str]) -> Unseen:
    """How many of the present values of ``current`` are not among the training categories,
    with the most frequent of them (cut to 64 characters: a report, not a copy of the traffic)."""
    present = current.dropna().astype(str)
    new = present[~present.isin(categories)]
    top = new.value_counts().head(_SHOWN_UNSEEN)
    return Unseen(
        share=float(len(new) / len(present)) if len(present) else 0.0,
        rows=len(new),
        values={str(v)[:_SHOWN_CHARS]: int(n) for v, n in top.items()},
    )
