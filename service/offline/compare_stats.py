"""An estimate with its percentile-bootstrap interval: what every rollout comparison reports."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

LEVEL = 0.95


class Estimate(BaseModel):
    """A metric (or a difference of metrics) with its bootstrap 95 % confidence interval."""

    model_config = ConfigDict(frozen=True)

    value: float
    low: float
    high: float
    n: int


def interval(value: float, boot: np.ndarray, n: int) -> Estimate:
    """``value`` with the central LEVEL interval of its bootstrap values ``boot``."""
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.nanpercentile(boot, [tail, 100 - tail])
    return Estimate(value=value, low=float(low), high=float(high), n=n)
