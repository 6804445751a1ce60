"""Realistic traffic for a running Vigil: rows drawn from the demo data with a little noise,
optionally shifted (drift) and followed by ground-truth feedback (optionally with label noise)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from model_store.demo import demo_data

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

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (
            f"sent {self.rows} rows in {self.requests} requests to {self.url} ({self.model}) "
            f"in {self.seconds:.1f} s: {self.rows_per_s:.0f} rows/s, {self.errors} errors"
        )
        if self.feedback or self.feedback_errors:
            text += (
                f"; feedback for {self.feedback} rows ({self.flipped} labels flipped), "
                f"{self.feedback_errors} errors"
            )
        if self.first_error:
            text += f"; first error: {self.first_error}"
        return text


def traffic(
    rows: int, *, seed: int = 0, drift: Mapping[str, float] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """``rows`` feature rows sampled from the demo data plus noise, and their true class names.

    ``drift`` shifts features by a number of their standard deviations.
    """
    x, y, names = demo_data()
    unknown = sorted(set(drift or {}) - set(x.columns))
    if unknown:
        raise SimulationError(f"unknown features {unknown}; the demo data has {list(x.columns)}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=rows)
    sd = x.std().to_numpy()
    values = x.to_numpy()[idx] + rng.normal(size=(rows, x.shape[1])) * (NOISE * sd)
    nonneg = (x.min() >= 0).to_numpy()
    # noise must not make a size or a count negative; a requested shift may
    values[:, nonneg] = np.maximum(values[:, nonneg], 0.0)
    out = pd.DataFrame(values, columns=x.columns)
    for feature, shift in (drift or {}).items():
        out[feature] += shift * float(x[feature].std())
    return out, [names[i] for i in y[idx]]


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


def run_simulation(
    url: str,
    model: str,
    rows: int,
    *,
    batch: int = 10,
    drift: Mapping[str, float] | None = None,
    label_noise: float = 0.0,
    feedback: bool = False,
    feedback_token: str = "",
    seed: int = 0,
    timeout: float = 30.0,
    on_rows: Callable[[int], None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SimulationSummary:
    """Send ``rows`` rows in requests of ``batch`` to ``POST /v1/models/{model}/predict``
    (and labels with ``feedback_token`` as Bearer token, when the service requires one);
    ``metadata`` goes with every request (a segment for ``vigil drift run --segment-by``)."""
    auth = {"Authorization": f"Bearer {feedback_token}"} if feedback_token else {}
    if rows < 1 or batch < 1:
        raise SimulationError("rows and batch must be at least 1")
    x, truth = traffic(rows, seed=seed, drift=drift)
    classes = demo_data()[2]
    labels, _ = noisy_labels(truth, label_noise, classes, np.random.default_rng(seed + 1))
    summary = SimulationSummary(url=url, model=model)
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


@dataclass(frozen=True, slots=True)
class _Label:
    request_id: str
    row: int
    label: str
    flipped: bool


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
