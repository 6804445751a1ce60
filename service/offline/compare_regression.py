"""A regressor's numbers in a rollout comparison: MAE and RMSE, shadow agreement within a tolerance.

The same questions as a classifier's (service/offline/compare.py), in a regressor's terms: on
labelled rows, each side's MAE and RMSE with a percentile-bootstrap 95 % interval, and the
interval of candidate - primary (paired on labelled shadow rows, else unpaired); on shadow rows,
the mean |Δ prediction| and the share of rows where both predictions agree within a tolerance.

Both metrics are functions of two means (of |error| and of error²), so a resample needs only
those means. Rows, unlike a classifier's confusion cells, are resampled one by one (B x n
draws); above ``MAX_ROWS`` labelled rows the interval comes from a seeded sample of that many,
moved to centre on the value of all rows: a little wider than all rows would give, never
narrower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.offline.compare_stats import Estimate, interval

REGRESSION_METRICS = ("mae", "rmse")
MAX_ROWS = 20_000
_DRAWS_PER_CHUNK = 2_000_000  # indices drawn at once (16 MB), whatever the number of rows


def numbers(values: pd.Series) -> np.ndarray:
    """Logged predictions or labels of a regressor (text; None when absent) as float64: the one
    reader of them, for rollouts and back-tests."""
    out: np.ndarray = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return out


def _parts(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per row: |error| and error², the two means the metrics are made of."""
    e = p - y
    return np.column_stack([np.abs(e), e * e])


def _metrics(means: np.ndarray) -> dict[str, np.ndarray]:
    """MAE and RMSE from the means of ``_parts`` (last axis: the two means)."""
    return {"mae": means[..., 0], "rmse": np.sqrt(means[..., 1])}


def _boot_means(parts: np.ndarray, rng: np.random.Generator, b: int) -> np.ndarray:
    """Column means of ``b`` row resamples of ``parts`` (at most MAX_ROWS of them), each moved
    by (mean of all rows - mean of the resampled rows), so that a sample's resamples centre on
    the value of all rows."""
    sample = parts
    if len(parts) > MAX_ROWS:
        sample = parts[rng.choice(len(parts), MAX_ROWS, replace=False)]
    n = len(sample)
    out = np.empty((b, parts.shape[1]))
    chunk = max(1, _DRAWS_PER_CHUNK // n)
    for start in range(0, b, chunk):
        m = min(chunk, b - start)
        out[start : start + m] = sample[rng.integers(0, n, size=(m, n))].mean(axis=1)
    moved: np.ndarray = out + (parts.mean(axis=0) - sample.mean(axis=0))
    return moved


@dataclass(frozen=True)
class SideBoot:
    """One side's metrics on its labelled rows and their bootstrap values, drawn once: they give
    the side's intervals and, between two sides, the unpaired difference."""

    observed: dict[str, float]
    boot: dict[str, np.ndarray]
    n: int

    def estimates(self) -> dict[str, Estimate]:
        return {k: interval(self.observed[k], self.boot[k], self.n) for k in REGRESSION_METRICS}


def side_boot(
    labels: pd.Series, predictions: pd.Series, rng: np.random.Generator, b: int
) -> SideBoot | None:
    """On rows where both label and prediction are numbers; None when there are none."""
    y, p = numbers(labels), numbers(predictions)
    keep = np.isfinite(y) & np.isfinite(p)
    if not keep.any():
        return None
    parts = _parts(y[keep], p[keep])
    observed = {k: float(v) for k, v in _metrics(parts.mean(axis=0)).items()}
    return SideBoot(observed, _metrics(_boot_means(parts, rng, b)), int(keep.sum()))


def paired_difference(
    labels: pd.Series, primary: pd.Series, candidate: pd.Series, rng: np.random.Generator, b: int
) -> dict[str, Estimate]:
    """Candidate - primary on the same rows, each resample drawing the same rows for both."""
    y, pp, pc = numbers(labels), numbers(primary), numbers(candidate)
    keep = np.isfinite(y) & np.isfinite(pp) & np.isfinite(pc)
    if not keep.any():
        return {}
    both = np.hstack([_parts(y[keep], pp[keep]), _parts(y[keep], pc[keep])])
    observed, boot = both.mean(axis=0), _boot_means(both, rng, b)
    n = int(keep.sum())
    prim_obs, cand_obs = _metrics(observed[:2]), _metrics(observed[2:])
    prim_boot, cand_boot = _metrics(boot[:, :2]), _metrics(boot[:, 2:])
    return {
        k: interval(float(cand_obs[k] - prim_obs[k]), cand_boot[k] - prim_boot[k], n)
        for k in REGRESSION_METRICS
    }


def unpaired_difference(primary: SideBoot, candidate: SideBoot) -> dict[str, Estimate]:
    """Candidate - primary from each side's own resamples (the sides share no rows)."""
    n = min(primary.n, candidate.n)
    return {
        k: interval(
            candidate.observed[k] - primary.observed[k], candidate.boot[k] - primary.boot[k], n
        )
        for k in REGRESSION_METRICS
    }


def shadow_agreement(
    primary: pd.Series, candidate: pd.Series, tolerance: float
) -> tuple[float | None, float | None]:
    """(share of rows whose predictions differ by at most ``tolerance`` x the larger of the two,
    mean |Δ prediction|) over the rows where both answered a number."""
    pp, pc = numbers(primary), numbers(candidate)
    keep = np.isfinite(pp) & np.isfinite(pc)
    if not keep.any():
        return None, None
    pp, pc = pp[keep], pc[keep]
    diff = np.abs(pc - pp)
    agree = diff <= tolerance * np.maximum(np.abs(pp), np.abs(pc))
    return float(agree.mean()), float(diff.mean())
