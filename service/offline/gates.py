"""Gate verdicts over a comparison: may the rollout advance, must it wait, or abort?

Safety gates (error rate, latency) protect clients: one failing means abort. The others (volume,
time, agreement, labelled metric) decide whether enough is known to advance; a failing one holds
the rollout for a person to judge. Each gate answers ``not_enough_data`` rather than guess.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from model_store.rollout import Gates
from service.offline.compare import Comparison

_LATENCY_FLOOR_S = 1e-6  # a primary p99 of 0 (a clock's resolution) must not divide by zero


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    NOT_ENOUGH_DATA = "not_enough_data"
    SKIPPED = "skipped"  # does not apply: agreement without shadow rows, metric without margin


class Decision(StrEnum):
    ABORT = "abort"  # a safety gate failed
    HOLD = "hold"  # a quality gate failed: a person decides
    WAIT = "wait"  # nothing failed, but some gate lacks data
    ADVANCE = "advance"  # every gate passed (or does not apply)


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    verdict: Verdict
    safety: bool
    observed: float | None
    threshold: float | None
    detail: str


def evaluate_gates(
    comparison: Comparison, gates: Gates, started_at: datetime, now: datetime
) -> list[GateResult]:
    return [
        _min_requests(comparison, gates),
        _min_duration(gates, (now - started_at).total_seconds()),
        _error_rate(comparison, gates),
        _p99_ratio(comparison, gates),
        _agreement(comparison, gates),
        _metric(comparison, gates),
    ]


def decide(results: list[GateResult]) -> Decision:
    verdicts = {(r.safety, r.verdict) for r in results}
    if (True, Verdict.FAIL) in verdicts:
        return Decision.ABORT
    if (False, Verdict.FAIL) in verdicts:
        return Decision.HOLD
    if any(v is Verdict.NOT_ENOUGH_DATA for _, v in verdicts):
        return Decision.WAIT
    return Decision.ADVANCE


def _result(
    name: str,
    ok: bool | None,
    observed: float | None,
    threshold: float | None,
    detail: str,
    *,
    safety: bool = False,
) -> GateResult:
    verdict = Verdict.NOT_ENOUGH_DATA if ok is None else Verdict.PASS if ok else Verdict.FAIL
    return GateResult(
        name=name,
        verdict=verdict,
        safety=safety,
        observed=observed,
        threshold=threshold,
        detail=detail,
    )


def _min_requests(c: Comparison, g: Gates) -> GateResult:
    n = c.candidate.requests
    ok = True if n >= g.min_requests else None
    return _result("min_requests", ok, n, g.min_requests, f"{n} candidate requests")


def _min_duration(g: Gates, elapsed: float) -> GateResult:
    ok = True if elapsed >= g.min_duration_s else None
    return _result("min_duration_s", ok, elapsed, g.min_duration_s, f"running {elapsed:.0f} s")


def _error_rate(c: Comparison, g: Gates) -> GateResult:
    n, errors = c.candidate.requests, c.candidate.errors
    # Fail as soon as the verdict is certain: even if every request still needed to reach
    # min_requests succeeded, the rate would stay above the limit. A broken candidate is
    # aborted after a handful of failures rather than after min_requests of them.
    ok: bool | None
    if errors > g.max_error_rate * max(n, g.min_requests):
        ok = False
    elif n >= g.min_requests:
        ok = True
    else:
        ok = None
    rate = errors / n if n else None
    detail = f"{errors} of {n} candidate requests failed (5xx)"
    return _result("max_error_rate", ok, rate, g.max_error_rate, detail, safety=True)


def _p99_ratio(c: Comparison, g: Gates) -> GateResult:
    cand, prim = c.candidate.latency_p99_s, c.primary.latency_p99_s
    if cand is None or prim is None or c.candidate.requests < g.min_requests:
        return _result(
            "max_p99_ratio", None, None, g.max_p99_ratio, "too few timed requests", safety=True
        )
    ratio = cand / max(prim, _LATENCY_FLOOR_S)
    detail = f"p99 {cand * 1000:.1f} ms vs {prim * 1000:.1f} ms"
    return _result(
        "max_p99_ratio", ratio <= g.max_p99_ratio, ratio, g.max_p99_ratio, detail, safety=True
    )


def _agreement(c: Comparison, g: Gates) -> GateResult:
    s = c.shadow
    if s.agreement is None or s.rows < g.min_requests:
        if "shadow" not in c.candidate_roles and "canary" in c.candidate_roles:
            return GateResult(
                name="min_agreement",
                verdict=Verdict.SKIPPED,
                safety=False,
                observed=None,
                threshold=g.min_agreement,
                detail="no shadow rows: a canary is not compared row by row",
            )
        return _result("min_agreement", None, s.agreement, g.min_agreement, f"{s.rows} shadow rows")
    alike = "same label" if c.task == "classification" else f"within {g.agreement_tolerance:.0%}"
    detail = f"{alike} on {s.agreement:.1%} of {s.rows} shadow rows"
    return _result(
        "min_agreement", s.agreement >= g.min_agreement, s.agreement, g.min_agreement, detail
    )


def _metric(c: Comparison, g: Gates) -> GateResult:
    name = f"{g.metric}_non_inferiority"
    if g.metric_margin is None:
        return GateResult(
            name=name,
            verdict=Verdict.SKIPPED,
            safety=False,
            observed=None,
            threshold=None,
            detail="metric_margin is unset",
        )
    labelled = min(c.primary.labelled_rows, c.candidate.labelled_rows)
    diff = c.difference.get(g.metric)
    primary = c.primary.metrics.get(g.metric)
    if g.regression:
        # an error: the candidate may exceed the primary's by margin x the primary's error
        limit = g.metric_margin * primary.value if primary is not None else None
    else:
        limit = -g.metric_margin  # a score: the candidate may fall short by margin
    if diff is None or limit is None or labelled < g.min_labels:
        return _result(name, None, None, limit, f"{labelled} labelled rows on the smaller side")
    f = "+.4g" if g.regression else "+.4f"  # an error in the target's units; a share
    detail = (
        f"candidate - primary {diff.value:{f}}, 95 % CI [{diff.low:{f}}, {diff.high:{f}}] "
        f"({c.difference_kind})"
    )
    if g.regression:
        # the whole interval below the limit: not worse; the whole interval above: worse
        ok = True if diff.high <= limit else False if diff.low > limit else None
        return _result(name, ok, diff.high, limit, detail)
    # the whole interval above -margin: not worse; the whole interval below: worse; else unsure
    ok = True if diff.low >= limit else False if diff.high < limit else None
    return _result(name, ok, diff.low, limit, detail)
