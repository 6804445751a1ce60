"""Realistic traffic for a running Vigil: rows drawn from a demo model's data with a little
noise, optionally shifted (drift) and followed by ground-truth feedback (optionally noisy).

Every demo model has its data here: numeric features get noise and shifts in standard
deviations, categorical (string) features keep their values and can have their category mix
shifted (``sex=female:0.9``: 90 % of the rows female; a category training never saw may be
named too). Label noise flips a classifier's labels to another class, and adds Gaussian noise
to a regressor's target (its standard deviation in target standard deviations).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import httpx
import numpy as np
import pandas as pd

from model_store import demo

NOISE = 0.02  # of each feature's standard deviation: rows are realistic, not copies
FEEDBACK_BATCH = 500


class SimulationError(RuntimeError):
    """The simulation cannot run as asked (service unreachable, unknown feature)."""


@dataclass(slots=True)
class SimulationSummary:
    url: str
    model: str
    rows: int = 0
    requests: int = 0
    errors: int = 0
    error_rows: int = 0
    feedback: int = 0
    flipped: int = 0
    feedback_errors: int = 0
    seconds: float = 0.0
    first_error: str = ""
    regression: bool = False

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (
            f"sent {self.rows} rows in {self.requests} requests to {self.url} ({self.model}) "
            f"in {self.seconds:.1f} s: {self.rows_per_s:.0f} rows/s, {self.errors} errors"
        )
        if self.feedback or self.feedback_errors:
            noise = "with added noise" if self.regression else "flipped"
            text += (
                f"; feedback for {self.feedback} rows ({self.flipped} labels {noise}), "
                f"{self.feedback_errors} errors"
            )
        if self.first_error:
            text += f"; first error: {self.first_error}"
        return text


@dataclass(frozen=True, slots=True)
class CategoryShift:
    """Set the share of ``category`` among a categorical feature's values to ``share``."""

    category: str
    share: float


Shift: TypeAlias = float | CategoryShift
"""A numeric feature's shift in its standard deviations, or a categorical feature's new mix."""


@dataclass(frozen=True, slots=True)
class DemoData:
    x: pd.DataFrame
    truth: np.ndarray
    """Per row: the class name (classifiers) or the target value (regressors, float64)."""
    classes: list[str] | None
    """The class names of a classifier; None for a regressor."""

    @property
    def regression(self) -> bool:
        return self.classes is None


def demo_dataset(model: str) -> DemoData:
    """The data the demo ``model`` was trained on."""
    if model in (demo.DEMO_MODEL, demo.WINE):
        x, y, names = demo.demo_data() if model == demo.DEMO_MODEL else demo.wine_data()
        return DemoData(x, np.asarray(names, dtype=object)[y], names)
    if model in (demo.DIABETES, demo.DIABETES_MIXED):
        x, target = demo.diabetes_data() if model == demo.DIABETES else demo.diabetes_mixed_data()
        return DemoData(x, np.asarray(target, dtype=np.float64), None)
    raise SimulationError(
        f"{model!r} is not a demo model; simulate draws traffic from the demo data of "
        f"{', '.join(demo.DEMO_NAMES)}"
    )


def traffic(
    rows: int,
    *,
    seed: int = 0,
    drift: Mapping[str, Shift] | None = None,
    model: str = demo.DEMO_MODEL,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``rows`` feature rows sampled from the demo data of ``model`` plus noise, and their truth
    (class names, or target values of a regressor).

    ``drift`` shifts numeric features by a number of their standard deviations and moves the
    category mix of categorical ones.
    """
    data = demo_dataset(model)
    x = data.x
    unknown = sorted(set(drift or {}) - set(x.columns))
    if unknown:
        raise SimulationError(f"unknown features {unknown}; the demo data has {list(x.columns)}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=rows)
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c])]
    out = x.iloc[idx].reset_index(drop=True).copy()
    num = x[numeric]
    sd = num.std().to_numpy()
    values = num.to_numpy()[idx] + rng.normal(size=(rows, len(numeric))) * (NOISE * sd)
    nonneg = (num.min() >= 0).to_numpy()
    # noise must not make a size or a count negative; a requested shift may
    values[:, nonneg] = np.maximum(values[:, nonneg], 0.0)
    out[numeric] = values
    for feature, shift in (drift or {}).items():
        if isinstance(shift, CategoryShift):
            if feature in numeric:
                raise SimulationError(
                    f"{feature} is numeric: shift it by standard deviations (FEATURE=SHIFT)"
                )
            out[feature] = _remix(out[feature], shift, rng)
        elif feature not in numeric:
            raise SimulationError(
                f"{feature} is categorical: shift its mix with FEATURE=CATEGORY:SHARE"
            )
        else:
            out[feature] += shift * float(x[feature].std())
    return out, data.truth[idx]


def _remix(values: pd.Series, shift: CategoryShift, rng: np.random.Generator) -> pd.Series:
    """Rows moved into (or out of) ``shift.category`` until it holds ``shift.share`` of them;
    rows moved out take the other categories in their present proportions."""
    if not 0 <= shift.share <= 1:
        raise SimulationError(f"a category share must be within [0, 1], got {shift.share}")
    out = values.astype(object).copy()
    inside = (out == shift.category).to_numpy()
    now = float(inside.mean())
    if shift.share > now:
        move = ~inside & (rng.random(len(out)) < (shift.share - now) / (1 - now))
        out[move] = shift.category
    elif shift.share < now:
        others = out[~inside].to_numpy()
        if not len(others):
            raise SimulationError(f"no other category than {shift.category!r} to move rows to")
        move = inside & (rng.random(len(out)) < 1 - shift.share / now)
        out[move] = rng.choice(others, size=int(move.sum()))
    return out


def noisy_labels(
    labels: list[str], p: float, classes: list[str], rng: np.random.Generator
) -> tuple[list[str], int]:
    """Each label replaced by another class with probability ``p``; returns (labels, flipped)."""
    if not 0 <= p <= 1:
        raise SimulationError(f"label noise must be within [0, 1], got {p}")
    flip = rng.random(len(labels)) < p
    out = list(labels)
    for i in np.flatnonzero(flip):
        others = [c for c in classes if c != labels[i]]
        out[i] = others[int(rng.integers(len(others)))]
    return out, int(flip.sum())


def noisy_targets(
    targets: np.ndarray, sd: float, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """A regressor's targets plus Gaussian noise of standard deviation ``sd`` times ``scale``
    (the target's standard deviation in the demo data)."""
    if not sd >= 0 or not np.isfinite(sd):
        raise SimulationError(f"label noise must be a finite number ≥ 0, got {sd}")
    noisy: np.ndarray = targets + rng.normal(0.0, sd * scale, len(targets))
    return noisy


def run_simulation(
    url: str,
    model: str,
    rows: int,
    *,
    batch: int = 10,
    drift: Mapping[str, Shift] | None = None,
    label_noise: float = 0.0,
    feedback: bool = False,
    feedback_token: str = "",
    seed: int = 0,
    timeout: float = 30.0,
    on_rows: Callable[[int], None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SimulationSummary:
    """Send ``rows`` rows of the demo data of ``model`` in requests of ``batch`` to
    ``POST /v1/models/{model}/predict`` (and labels with ``feedback_token`` as Bearer token,
    when the service requires one); ``metadata`` goes with every request (a segment for
    ``vigil drift run --segment-by``). ``label_noise``: the share of a classifier's labels
    flipped, or the noise added to a regressor's targets in target standard deviations."""
    auth = {"Authorization": f"Bearer {feedback_token}"} if feedback_token else {}
    if rows < 1 or batch < 1:
        raise SimulationError("rows and batch must be at least 1")
    data = demo_dataset(model)
    x, truth = traffic(rows, seed=seed, drift=drift, model=model)
    labels = _labels(data, truth, label_noise, np.random.default_rng(seed + 1))
    summary = SimulationSummary(url=url, model=model, regression=data.regression)
    records: list[dict[str, Any]] = x.to_dict("records")
    pending: list[_Label] = []
    with httpx.Client(base_url=url, timeout=timeout) as client:
        _check_reachable(client, url)
        started = time.perf_counter()
        for start in range(0, rows, batch):
            chunk = records[start : start + batch]
            request_id = _predict(client, model, chunk, summary, metadata)
            if request_id is not None and feedback:
                pending += [
                    _Label(request_id, i, labels[start + i], labels[start + i] != truth[start + i])
                    for i in range(len(chunk))
                ]
                if len(pending) >= FEEDBACK_BATCH:
                    _feedback(client, model, pending, summary, auth)
                    pending = []
            if on_rows is not None:
                on_rows(len(chunk))
        if pending:
            _feedback(client, model, pending, summary, auth)
        summary.seconds = time.perf_counter() - started
    return summary


def _labels(
    data: DemoData, truth: np.ndarray, noise: float, rng: np.random.Generator
) -> list[str] | list[float]:
    """What feedback sends: class names, or a regressor's targets as numbers."""
    if data.classes is None:
        scale = float(np.std(data.truth, ddof=1))
        return [float(v) for v in noisy_targets(truth.astype(np.float64), noise, scale, rng)]
    return noisy_labels([str(t) for t in truth], noise, data.classes, rng)[0]


@dataclass(frozen=True, slots=True)
class _Label:
    request_id: str
    row: int
    label: str | float
    flipped: bool
    """A classifier's label replaced by another class, or a regressor's target moved."""


def _check_reachable(client: httpx.Client, url: str) -> None:
    try:
        client.get("/v2/health/live").raise_for_status()
    except httpx.HTTPError as exc:
        raise SimulationError(f"cannot reach Vigil at {url}: {exc}") from exc


def _error(summary: SimulationSummary, text: str) -> None:
    if not summary.first_error:
        summary.first_error = text[:300]


def _predict(
    client: httpx.Client,
    model: str,
    chunk: list[dict[str, Any]],
    summary: SimulationSummary,
    metadata: Mapping[str, str] | None,
) -> str | None:
    summary.requests += 1
    body: dict[str, Any] = {"instances": chunk}
    if metadata:
        body["metadata"] = dict(metadata)
    try:
        r = client.post(f"/v1/models/{model}/predict", json=body)
    except httpx.HTTPError as exc:
        summary.errors += 1
        summary.error_rows += len(chunk)
        _error(summary, f"{type(exc).__name__}: {exc}")
        return None
    if r.status_code != 200:
        summary.errors += 1
        summary.error_rows += len(chunk)
        _error(summary, f"HTTP {r.status_code} {r.text}")
        return None
    summary.rows += len(chunk)
    request_id: str = r.json()["request_id"]
    return request_id


def _feedback(
    client: httpx.Client,
    model: str,
    labels: list[_Label],
    summary: SimulationSummary,
    headers: dict[str, str],
) -> None:
    items = [
        {"request_id": x.request_id, "row": x.row, "label": x.label, "model": model} for x in labels
    ]
    try:
        r = client.post("/v1/feedback", json=items, headers=headers)
    except httpx.HTTPError as exc:
        summary.feedback_errors += 1
        _error(summary, f"feedback: {type(exc).__name__}: {exc}")
        return
    if r.status_code != 200:
        summary.feedback_errors += 1
        _error(summary, f"feedback: HTTP {r.status_code} {r.text}")
        return
    summary.feedback += len(items)
    summary.flipped += sum(x.flipped for x in labels)
