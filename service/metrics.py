"""Prometheus metrics of the service, taken in one place (the data plane) and nowhere else.

Each app gets its own registry so tests do not leak series into each other. Under
``vigil serve --workers N`` the values live in PROMETHEUS_MULTIPROC_DIR and /metrics sums them.

Per-request observations are summed in memory and written to the prometheus values by
``flush()`` (every ``FLUSH_INTERVAL_S`` from the app's lifespan, before every exposition, and at
shutdown). In multiprocess mode each increment is an mmap write under a lock with a pid check;
nine of them per request cost ~15 % of a single-row prediction in the profile.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
MODEL_BUCKETS = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
if TYPE_CHECKING:
    from service.core.routing import Route  # metrics.py is ground: no import of core at run time

# Another worker's /metrics sees this process's last observations at most this late.
FLUSH_INTERVAL_S = 0.5


class HistogramBuffer:
    """Observations of one labelled histogram, summed in memory until ``flush``.

    Only the event-loop thread observes and flushes, so no lock is needed.
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # The child's upper bounds end with +Inf, so every value has a bucket; a value equal
        # to a bound belongs to it (le), as bisect_left finds.
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts, total = self._counts, self._sum
        if not any(counts):
            return
        self._counts, self._sum = [0] * len(counts), 0.0
        buckets = self._child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self._child._sum.inc(total)


class CounterBuffer:
    """Increments of one labelled counter, summed in memory until ``flush``."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._child.inc(pending)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def forget_dead_workers() -> None:
    """Drop the live gauges of worker processes that no longer exist (crashed or replaced), so a
    restarted worker does not leave stale series behind. Counters and histograms are kept: their
    totals must not go backwards."""
    mp_dir = multiprocess_dir()
    if not mp_dir:
        return
    for path in Path(mp_dir).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, mp_dir)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


class DeliveryMetrics:
    """What the I/O log deliverer reports; it may run in a process of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.iolog_delivered = Counter(
            "vigil_iolog_records_delivered_total",
            "I/O records moved from the spool into the log store.",
            ["table"],
            registry=r,
        )
        self.iolog_backlog = Gauge(
            "vigil_iolog_backlog_bytes",
            "Bytes in spool segments not yet delivered to the log store.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.iolog_quarantined = Gauge(
            "vigil_iolog_quarantined_segments",
            "Spool segments moved to quarantine after repeated delivery failures; their records "
            "are not in the log store until `vigil logs quarantine retry`.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.iolog_failures = Counter(
            "vigil_iolog_failures_total",
            "Failures of the I/O log pipeline, by stage (spool, deliver, fsync, pii_policy).",
            ["stage"],
            registry=r,
        )
        for stage in ("spool", "deliver", "fsync", "pii_policy"):
            self.iolog_failures.labels(stage)  # present at 0, so dashboards show 0, not "No data"


class Metrics(DeliveryMetrics):
    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        r = self.registry
        self.request_seconds = Histogram(
            "vigil_request_duration_seconds",
            "Time from request received to response ready, by model, version, endpoint, status "
            "and role (primary, or canary: the rollout's candidate answered).",
            ["model", "version", "endpoint", "status", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "vigil_model_inference_duration_seconds",
            "Time spent in onnxruntime per request.",
            ["model", "version"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.rows = Histogram(
            "vigil_request_rows",
            "Rows (instances) per prediction request.",
            ["model", "version", "endpoint"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "vigil_requests_in_flight",
            "Prediction requests being processed (sampled every 0.5 s).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            "vigil_request_errors_total",
            "Requests answered with an error, by endpoint and error type.",
            ["endpoint", "type"],
            registry=r,
        )
        self.model_info = Gauge(
            "vigil_model_info",
            "1 for each model version loaded in this process; serving=1 marks the default.",
            ["model", "version", "sha256", "serving"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_load_failures = Counter(
            "vigil_model_load_failures_total",
            "Model versions refused at load (integrity, smoke test, onnxruntime errors).",
            ["model", "version"],
            registry=r,
        )
        self.model_loads = Counter(
            "vigil_model_loads_total",
            "Model versions loaded (file hashed, session built, smoke-tested) by this process.",
            ["model", "version"],
            registry=r,
        )
        self.model_unloads = Counter(
            "vigil_model_unloads_total",
            "Model versions unloaded (least recently used beyond VIGIL_MAX_LOADED_VERSIONS, "
            "or by the admin API).",
            ["model", "version"],
            registry=r,
        )
        self.iolog_spooled = Counter(
            "vigil_iolog_records_spooled_total",
            "I/O records appended to the local spool (one per row).",
            ["table"],
            registry=r,
        )
        self.iolog_unlogged = Counter(
            "vigil_iolog_unlogged_records_total",
            "Rows served without being logged (only with VIGIL_ON_LOG_FAILURE=serve).",
            registry=r,
        )
        self.iolog_healthy = Gauge(
            "vigil_iolog_healthy",
            "1 when the I/O log spool can be written.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.shadow_seconds = Histogram(
            "vigil_shadow_duration_seconds",
            "Latency a shadow candidate would have given (the request's, its model time "
            "swapped for the candidate's), by model, version and status (500: it failed).",
            ["model", "version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_failures = Counter(
            "vigil_shadow_failures_total",
            "Shadow runs of a rollout candidate that failed (exception, non-finite output, too "
            "slow); the client got the primary's answer.",
            ["model", "version"],
            registry=r,
        )
        self.unseen_categories = Counter(
            "vigil_unseen_categories_total",
            "Served rows whose categorical feature held a value training never saw (the "
            "pipeline's handle_unknown decided the answer), by model, version and feature. "
            "Labels are names the model store knows: the values themselves are not labels.",
            ["model", "version", "feature"],
            registry=r,
        )
        self.canary_fallbacks = Counter(
            "vigil_canary_fallbacks_total",
            "Canary requests whose candidate answered non-finite numbers; the primary answered "
            "them instead and the failure was logged as a canary row with status 500.",
            ["model", "version"],
            registry=r,
        )
        self.rollout_mode = Gauge(
            "vigil_rollout_mode",
            "The model's running rollout: 0 none, 1 shadow, 2 canary (as this worker follows it).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_percent = Gauge(
            "vigil_rollout_canary_percent",
            "Share of requests the rollout's candidate answers (canary), in percent.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_candidate = Gauge(
            "vigil_rollout_candidate_version",
            "Version of the running rollout's candidate (0: none).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_revision = Gauge(
            "vigil_rollout_revision",
            "Revision of the running rollout (bumped by each change; 0: none).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_gate = Gauge(
            "vigil_rollout_gate",
            "Last verdict of each gate of the automatic loop: 1 pass, 0 fail, -1 no data or "
            "skipped.",
            ["model", "gate"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_agreement = Gauge(
            "vigil_rollout_agreement",
            "Share of shadow rows where candidate and primary predict alike (last evaluation).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.rollout_actions = Counter(
            "vigil_rollout_actions_total",
            "Rollout changes made by the automatic loop, by action (step, promote, abort).",
            ["model", "action", "who"],
            registry=r,
        )
        self.rollout_aborts = Counter(
            "vigil_rollout_aborts_total",
            "Rollouts aborted by this worker's automatic loop (who=auto): a safety gate failed.",
            ["model", "who"],
            registry=r,
        )
        self._shadow_children: dict[
            tuple[str, str, int], tuple[HistogramBuffer, CounterBuffer]
        ] = {}
        self._children: dict[
            tuple[str, ...], tuple[HistogramBuffer, HistogramBuffer | None, HistogramBuffer | None]
        ] = {}
        self._buffers: list[HistogramBuffer | CounterBuffer] = []
        self._in_flight = 0

    # -- the hot path: memory only -------------------------------------------------------------
    def request_started(self) -> None:
        self._in_flight += 1

    def request_finished(self) -> None:
        self._in_flight -= 1

    def counter(self, child: Any) -> CounterBuffer:
        """A buffered handle on a labelled counter child, flushed with the others."""
        buf = CounterBuffer(child)
        self._buffers.append(buf)
        return buf

    def _histogram(self, child: Any) -> HistogramBuffer:
        buf = HistogramBuffer(child)
        self._buffers.append(buf)
        return buf

    def observe(
        self,
        model: str,
        version: str,
        endpoint: str,
        status: int,
        seconds: float,
        rows: int,
        model_seconds: float | None,
        role: str = "primary",
    ) -> None:
        if not self.enabled:
            return
        key = (model, version, endpoint, str(status), role)
        children = self._children.get(key)
        if children is None:
            # Rows and model time exist only for requests that reached the model.
            served = model_seconds is not None
            latency = self.request_seconds.labels(model, version, endpoint, str(status), role)
            children = (
                self._histogram(latency),
                self._histogram(self.rows.labels(model, version, endpoint)) if served else None,
                self._histogram(self.model_seconds.labels(model, version)) if served else None,
            )
            self._children[key] = children
        children[0].observe(seconds)
        if model_seconds is not None and children[1] is not None and children[2] is not None:
            children[1].observe(rows)
            children[2].observe(model_seconds)

    def observe_shadow(
        self, model: str, version: str, status: int, seconds: float, failed: bool
    ) -> None:
        if not self.enabled:
            return
        key = (model, version, status)
        children = self._shadow_children.get(key)
        if children is None:
            children = (
                self._histogram(self.shadow_seconds.labels(model, version, str(status))),
                self.counter(self.shadow_failures.labels(model, version)),
            )
            self._shadow_children[key] = children
        children[0].observe(seconds)
        if failed:
            children[1].inc()

    def unseen(self, model: str, version: str, counts: dict[str, int]) -> None:
        if self.enabled:
            for feature, n in counts.items():
                self.unseen_categories.labels(model, version, feature).inc(n)

    def canary_fallback(self, model: str, version: str) -> None:
        if self.enabled:
            self.canary_fallbacks.labels(model, version).inc()

    def set_route(self, model: str, route: Route | None) -> None:
        """The rollout this worker follows for ``model`` (none: zeros)."""
        if not self.enabled:
            return
        if route is None:
            mode, percent, candidate, revision = 0, 0.0, 0, 0
        else:
            mode = 1 if route.mode == "shadow" else 2
            percent, candidate, revision = route.percent, route.candidate.version, route.revision
        self.rollout_mode.labels(model).set(mode)
        self.rollout_percent.labels(model).set(percent)
        self.rollout_candidate.labels(model).set(candidate)
        self.rollout_revision.labels(model).set(revision)

    def error(self, endpoint: str, kind: str) -> None:
        if self.enabled:
            self.errors.labels(endpoint, kind).inc()

    def flush(self) -> None:
        """Write what the hot path summed in memory to the prometheus values."""
        if not self.enabled:
            return
        for buf in self._buffers:
            buf.flush()
        self.in_flight.set(self._in_flight)

    async def flush_forever(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.flush()

    def exposition(self) -> bytes:
        self.flush()
        mp_dir = multiprocess_dir()
        if mp_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=mp_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
