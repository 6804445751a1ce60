"""The automatic rollout loop: step, promote or abort rollouts started with ``auto``.

Every ``VIGIL_ROLLOUT_EVAL_S`` each worker looks for automatic rollouts; for each, the one
replica holding the model's lease (model_store/lease.py; time to live 3 evaluation intervals)
reads the rollout's window of the I/O log in a child process (service/offline/report_process.py),
evaluates the gates and acts:

- abort when a safety gate fails (error rate, latency), at once;
- advance when every gate passes and the current step has run ``min_duration_s``: shadow →
  canary at the schedule's first share → the next shares → promote;
- otherwise wait (or hold, for a person to judge).

It acts with ``expected_revision``: if a person (or another replica) changed the rollout since
it was read, the action is refused and nothing is written; the next evaluation starts again
from the state then. Each action is a history entry with who=auto and the gate results.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from model_store.errors import RolloutConflictError, RolloutNotFoundError, StoreError
from model_store.history import WHO_AUTO
from model_store.lease import acquire, new_holder, release
from model_store.rollout import Mode, Rollouts, RolloutState
from model_store.store import ModelStore
from service.metrics import Metrics
from service.offline.gates import Decision
from service.offline.report_process import ReportProcess
from service.settings import Settings

log = logging.getLogger("vigil.autopilot")
LEASE_INTERVALS = 3  # the lease outlives two missed evaluations of its holder
_GATE_VALUE = {"pass": 1, "fail": 0}


class Autopilot:
    def __init__(
        self, settings: Settings, store: ModelStore, metrics: Metrics, reports: ReportProcess
    ) -> None:
        self.settings = settings
        self.reports = reports
        self.store = store
        self.rollouts = Rollouts(store)
        self.metrics = metrics
        self.holder = new_holder()
        self.interval_s = settings.rollout_eval_s
        self.schedule = sorted(p for p in settings.rollout_schedule if 0 < p < 100)
        self._held: set[str] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("automatic rollout evaluation failed")
            self.reports.close_if_idle()

    def close(self) -> None:
        for model in self._held:
            try:
                release(self.store, model, self.holder)
            except StoreError as exc:
                log.warning("cannot release the rollout lease of %s: %s", model, exc)

    def tick(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """Evaluate every automatic rollout this replica holds the lease of; (model, action)."""
        done = []
        for model in self.store.models():
            try:
                state = self.rollouts.current(model)
            except StoreError as exc:
                log.error("cannot read the rollout of %s: %s", model, exc)
                continue
            if state is None or not state.auto:
                continue
            ttl = LEASE_INTERVALS * self.interval_s
            try:
                held = acquire(self.store, model, self.holder, ttl)
            except (StoreError, OSError) as exc:  # a read-only store: another replica may act
                log.warning("cannot take the rollout lease of %s: %s", model, exc)
                held = False
            if not held:
                self._held.discard(model)
                continue
            self._held.add(model)
            action = self._evaluate(state, now or datetime.now(UTC))
            if action:
                done.append((model, action))
        return done

    def _evaluate(self, state: RolloutState, now: datetime) -> str | None:
        report = self.reports.report(state, now)
        results: list[dict[str, Any]] = report.get("gate_results") or []
        self._gauges(state.model, report, results)
        if "decision" not in report:
            return None  # the log could not be read: rollout_report logged why
        decision = Decision(report["decision"])
        try:
            if decision is Decision.ABORT:
                failed = [r["name"] for r in results if r["safety"] and r["verdict"] == "fail"]
                self.rollouts.abort(
                    state.model, expected_revision=state.revision, who=WHO_AUTO,
                    reason=f"safety gate failed: {', '.join(failed)}", gate_results=results,
                )  # fmt: skip
                self.metrics.rollout_aborts.labels(state.model, WHO_AUTO).inc()
                return self._acted(state, "abort")
            if decision is Decision.ADVANCE and self._dwelt(state, now):
                return self._advance(state, results)
        except (RolloutConflictError, RolloutNotFoundError) as exc:
            # Someone else changed it since we read it: act on what it is now, next time.
            log.info("automatic %s of %s not applied: %s", decision.value, state.model, exc)
        return None

    def _dwelt(self, state: RolloutState, now: datetime) -> bool:
        """Each step runs ``min_duration_s`` before the next (the gate counts the whole rollout)."""
        since = state.steps[-1].at if state.steps else state.started_at
        return (now - since).total_seconds() >= state.gates.min_duration_s

    def _advance(self, state: RolloutState, results: list[dict[str, Any]]) -> str:
        current = state.percent if state.mode is Mode.CANARY else 0.0
        nxt = next((p for p in self.schedule if p > current), None)
        if nxt is None:
            self.rollouts.promote(
                state.model, expected_revision=state.revision, who=WHO_AUTO,
                reason="every gate passed at the last step", gate_results=results,
            )  # fmt: skip
            return self._acted(state, "promote")
        self.rollouts.step(
            state.model, nxt, expected_revision=state.revision, who=WHO_AUTO,
            reason=f"every gate passed: canary {current:g} % → {nxt:g} %", gate_results=results,
        )  # fmt: skip
        return self._acted(state, "step")

    def _acted(self, state: RolloutState, action: str) -> str:
        log.warning(
            "automatic rollout %s of %s v%s (revision %d)",
            action, state.model, state.candidate_version, state.revision,
        )  # fmt: skip
        self.metrics.rollout_actions.labels(state.model, action, WHO_AUTO).inc()
        return action

    def _gauges(self, model: str, report: dict[str, Any], results: list[dict[str, Any]]) -> None:
        for r in results:
            self.metrics.rollout_gate.labels(model, r["name"]).set(
                _GATE_VALUE.get(r["verdict"], -1)
            )
        comparison = report.get("comparison") or {}
        agreement = (comparison.get("shadow") or {}).get("agreement")
        if agreement is not None:
            self.metrics.rollout_agreement.labels(model).set(agreement)
