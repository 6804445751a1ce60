"""Candidate vs primary, side by side, from logged rows: pure functions over a DataFrame.

Because they read the shared I/O log rather than one process's counters, the numbers hold across
replicas. Rows are those of ``read_predictions`` (request_id, row, version, status, latency_s,
prediction, proba_<class>, label) plus an optional ``role`` column (primary / shadow / canary;
absent means primary). A row whose status is 5xx is a failed request of its version; 4xx are the
client's fault and do not count against a model.

Confidence intervals are percentile bootstraps. Resampling n rows with replacement only changes
how often each (label, prediction) cell is drawn, so a resample is one multinomial draw of the
cell counts: identical in distribution to resampling rows, and O(resamples x cells) whatever n.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from service.offline import compare_regression as regression
from service.offline.compare_stats import Estimate, interval

__all__ = ["Comparison", "Estimate", "ShadowStats", "SideStats", "compare"]

RESAMPLES = 1000
SEED = 0
METRICS = ("accuracy", "f1_macro")  # a classifier's; a regressor's: regression.REGRESSION_METRICS
Role = Literal["primary", "shadow", "canary"]
Task = Literal["classification", "regression"]


class SideStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int
    requests: int
    rows: int
    errors: int
    error_rate: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    labelled_rows: int
    metrics: dict[str, Estimate]


class ShadowStats(BaseModel):
    """Rows answered by both versions (the candidate as a shadow of the primary). Agreement: the
    same label (classifiers), predictions within the gates' tolerance (regressors)."""

    model_config = ConfigDict(frozen=True)

    rows: int
    agreement: float | None
    mean_abs_proba_diff: float | None
    mean_abs_prediction_diff: float | None = None  # regressors


class Comparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    task: Task = "classification"
    primary: SideStats
    candidate: SideStats
    candidate_roles: dict[str, int]
    shadow: ShadowStats
    difference: dict[str, Estimate]
    difference_kind: Literal["paired", "unpaired"] | None


def compare(
    frame: pd.DataFrame,
    primary: int,
    candidate: int,
    *,
    task: Task = "classification",
    tolerance: float = 0.1,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Compare ``candidate`` with ``primary`` on the rows of ``frame`` (any other version is
    ignored). ``tolerance``: a regressor's shadow rows agree when their predictions differ by at
    most this fraction of the larger. Seeded: the same frame gives the same intervals."""
    frame = _with_role(frame)
    prim = frame[frame["version"] == primary]
    cand = frame[frame["version"] == candidate]
    rng = np.random.default_rng(seed)
    pairs = _shadow_pairs(prim, cand)
    lp, lc = _labelled(_ok(prim)), _labelled(_ok(cand))
    metrics_p: dict[str, Estimate] = {}
    metrics_c: dict[str, Estimate] = {}
    if task == "regression":
        sp, sc = (
            regression.side_boot(rows["label"], rows["prediction"], rng, resamples)
            if len(rows) else None
            for rows in (lp, lc)
        )  # fmt: skip
        difference, kind = _regression_difference(pairs, sp, sc, rng, resamples)
        shadow = _regression_shadow_stats(pairs, tolerance)
        metrics_p, metrics_c = (s.estimates() if s else {} for s in (sp, sc))
    else:
        classes = _classes(prim, cand)
        difference, kind = _difference(lp, lc, pairs, classes, rng, resamples)
        shadow = _shadow_stats(pairs)
        if len(lp):
            metrics_p = _class_metrics(lp, classes, rng, resamples)
        if len(lc):
            metrics_c = _class_metrics(lc, classes, rng, resamples)
    return Comparison(
        task=task,
        primary=_side(prim, primary, len(lp), metrics_p),
        candidate=_side(cand, candidate, len(lc), metrics_c),
        candidate_roles={str(k): int(v) for k, v in cand["role"].value_counts().items()},
        shadow=shadow,
        difference=difference,
        difference_kind=kind,
    )


def _with_role(frame: pd.DataFrame) -> pd.DataFrame:
    if "role" in frame.columns:
        return frame.assign(role=frame["role"].fillna("primary"))
    return frame.assign(role="primary")


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"].astype("int64") < 500]


def _labelled(rows: pd.DataFrame) -> pd.DataFrame:
    if "label" not in rows.columns:
        return rows.iloc[0:0]
    return rows[rows["label"].notna()]


def _class_metrics(
    labelled: pd.DataFrame, classes: list[str], rng: np.random.Generator, b: int
) -> dict[str, Estimate]:
    y, p = _codes(labelled["label"], classes), _codes(labelled["prediction"], classes)
    k = len(classes)
    boot = _boot_confusions(y * k + p, k**2, rng, b)
    boots = _estimates(_confusion(y, p, k), boot.reshape(-1, k, k), len(labelled))
    return {name: interval(*boots[name]) for name in METRICS}


def _side(
    rows: pd.DataFrame, version: int, labelled_rows: int, metrics: dict[str, Estimate]
) -> SideStats:
    requests = rows["request_id"].nunique()
    errors = rows.loc[rows["status"].astype("int64") >= 500, "request_id"].nunique()
    ok = _ok(rows)
    # latency_s is per request, repeated on each of its rows
    latency = ok.drop_duplicates("request_id")["latency_s"].dropna().to_numpy(dtype=np.float64)
    return SideStats(
        version=version,
        requests=int(requests),
        rows=len(rows),
        errors=int(errors),
        error_rate=errors / requests if requests else None,
        latency_p50_s=float(np.quantile(latency, 0.5)) if len(latency) else None,
        latency_p99_s=float(np.quantile(latency, 0.99)) if len(latency) else None,
        labelled_rows=labelled_rows,
        metrics=metrics,
    )


def _shadow_pairs(prim: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    shadow = _ok(cand[cand["role"] == "shadow"])
    return _ok(prim).merge(shadow, on=["request_id", "row"], suffixes=("_p", "_c"))


def _shadow_stats(pairs: pd.DataFrame) -> ShadowStats:
    if pairs.empty:
        return ShadowStats(rows=0, agreement=None, mean_abs_proba_diff=None)
    agreement = float((pairs["prediction_p"] == pairs["prediction_c"]).mean())
    probas = [c[: -len("_p")] for c in pairs.columns if c.startswith("proba_") and c.endswith("_p")]
    shared = [c for c in probas if f"{c}_c" in pairs.columns]
    diff = None
    if shared:
        p = pairs[[f"{c}_p" for c in shared]].to_numpy(dtype=np.float64)
        c = pairs[[f"{c}_c" for c in shared]].to_numpy(dtype=np.float64)
        diff = float(np.nanmean(np.abs(p - c)))
    return ShadowStats(rows=len(pairs), agreement=agreement, mean_abs_proba_diff=diff)


def _regression_shadow_stats(pairs: pd.DataFrame, tolerance: float) -> ShadowStats:
    agreement, diff = (None, None)
    if not pairs.empty:
        agreement, diff = regression.shadow_agreement(
            pairs["prediction_p"], pairs["prediction_c"], tolerance
        )
    return ShadowStats(
        rows=len(pairs), agreement=agreement, mean_abs_proba_diff=None,
        mean_abs_prediction_diff=diff,
    )  # fmt: skip


def _regression_difference(
    pairs: pd.DataFrame,
    primary: regression.SideBoot | None,
    candidate: regression.SideBoot | None,
    rng: np.random.Generator,
    b: int,
) -> tuple[dict[str, Estimate], Literal["paired", "unpaired"] | None]:
    """As ``_difference``, for a regressor's MAE and RMSE; unpaired from the sides' own
    resamples (``side_boot``), drawn once for their intervals and this."""
    paired = _labelled(pairs.rename(columns={"label_p": "label"}))
    if len(paired):
        d = regression.paired_difference(
            paired["label"], paired["prediction_p"], paired["prediction_c"], rng, b
        )
        return d, ("paired" if d else None)
    if primary is None or candidate is None:
        return {}, None
    return regression.unpaired_difference(primary, candidate), "unpaired"


def _difference(
    lp: pd.DataFrame,
    lc: pd.DataFrame,
    pairs: pd.DataFrame,
    classes: list[str],
    rng: np.random.Generator,
    b: int,
) -> tuple[dict[str, Estimate], Literal["paired", "unpaired"] | None]:
    """Candidate - primary: paired on the labelled shadow rows when there are any (each row
    judged by both versions, so row difficulty cancels out), else unpaired across the sides'
    labelled rows that did not fail (``lp``, ``lc``)."""
    k = len(classes)
    paired = _labelled(pairs.rename(columns={"label_p": "label"}))
    if len(paired):
        y = _codes(paired["label"], classes)
        cp = _codes(paired["prediction_p"], classes)
        cc = _codes(paired["prediction_c"], classes)
        boot = _boot_confusions((y * k + cp) * k + cc, k**3, rng, b).reshape(-1, k, k, k)
        obs = np.bincount((y * k + cp) * k + cc, minlength=k**3).reshape(k, k, k)
        d = _diff(_estimates(obs.sum(2), boot.sum(3), len(paired)),
                  _estimates(obs.sum(1), boot.sum(2), len(paired)))  # fmt: skip
        return d, "paired"
    if not len(lp) or not len(lc):
        return {}, None
    sides = []
    for rows in (lp, lc):
        y, p = _codes(rows["label"], classes), _codes(rows["prediction"], classes)
        side_boot = _boot_confusions(y * k + p, k * k, rng, b).reshape(-1, k, k)
        sides.append(_estimates(_confusion(y, p, k), side_boot, len(rows)))
    return _diff(*sides), "unpaired"


_Boot = dict[str, tuple[float, np.ndarray, int]]  # metric → (observed, bootstrap values, n)


def _estimates(observed: np.ndarray, boot: np.ndarray, n: int) -> _Boot:
    out: _Boot = {}
    for name in METRICS:
        value = float(_metric(name, observed[None])[0])
        out[name] = (value, _metric(name, boot), n)
    return out


def _diff(primary: _Boot, candidate: _Boot) -> dict[str, Estimate]:
    out = {}
    for name in METRICS:
        (vp, bp, n), (vc, bc, _) = primary[name], candidate[name]
        out[name] = interval(vc - vp, bc - bp, n)
    return out


def _metric(name: str, confusions: np.ndarray) -> np.ndarray:
    """``name`` of each confusion matrix in a (B, K, K) stack (rows: truth, columns: predicted)."""
    total = confusions.sum(axis=(1, 2))
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(np.float64)
    if name == "accuracy":
        accuracy: np.ndarray = tp.sum(axis=1) / total
        return accuracy
    # macro F1 over the classes present in truth or predictions, as scikit-learn computes it
    denom = confusions.sum(axis=1) + confusions.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    macro: np.ndarray = np.nanmean(f1, axis=1)
    return macro


def _boot_confusions(
    cells: np.ndarray, n_cells: int, rng: np.random.Generator, b: int
) -> np.ndarray:
    counts = np.bincount(cells, minlength=n_cells)
    return rng.multinomial(len(cells), counts / counts.sum(), size=b)


def _confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


def _classes(*frames: pd.DataFrame) -> list[str]:
    values: set[str] = set()
    for f in frames:
        values.update(str(v) for v in f["prediction"].dropna().unique())
        if "label" in f.columns:
            values.update(str(v) for v in f["label"].dropna().unique())
    return sorted(values)


def _codes(values: pd.Series, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[str(v)] for v in values), dtype=np.int64, count=len(values))
