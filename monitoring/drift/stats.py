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

from monitoring.drift.result import ColumnDrift


def _clean(values: pd.Series) -> pd.Series:
    return values.replace([-np.inf, np.inf], np.nan).dropna()


def column_drift(
    reference: pd.Series, current: pd.Series, method: str, threshold: float
) -> ColumnDrift:
    ref, cur = _clean(reference), _clean(current)
    if ref.empty or cur.empty:
        raise ValueError("no finite values to compare")
    stattest = get_stattest(ref, cur, ColumnType.Numerical, method)
    result = stattest(ref, cur, ColumnType.Numerical, threshold)
    return ColumnDrift(
        score=float(result.drift_score),
        method=stattest.name,
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
    )
