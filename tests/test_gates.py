"""Gate verdicts: what the automatic loop (and a person reading `vigil rollout status`) acts on.

Safety gates (error rate, p99 latency) failing means abort; quality gates failing means hold;
too little data means wait — never a pass on too little evidence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from model_store.rollout import Gates
from service.offline.compare import Comparison, Estimate, ShadowStats, SideStats
from service.offline.gates import Decision, GateResult, Verdict, decide, evaluate_gates

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)
GATES = Gates(min_requests=100, min_duration_s=600, min_labels=50)


def side(version: int, requests: int = 1000, errors: int = 0, p99: float | None = 0.010,
         labelled: int = 500) -> SideStats:  # fmt: skip
    return SideStats(
        version=version, requests=requests, rows=requests, errors=errors,
        error_rate=errors / requests if requests else None, latency_p50_s=0.005,
        latency_p99_s=p99, labelled_rows=labelled, metrics={},
    )  # fmt: skip


def comparison(
    *, candidate: SideStats | None = None, primary: SideStats | None = None,
    agreement: float | None = 0.97, shadow_rows: int = 1000, diff: tuple[float, float] = (-0.01, 0.02),
    roles: dict[str, int] | None = None,
) -> Comparison:  # fmt: skip
    value = sum(diff) / 2
    return Comparison(
        primary=primary or side(1), candidate=candidate or side(2),
        candidate_roles=roles if roles is not None else {"shadow": 1000},
        shadow=ShadowStats(rows=shadow_rows, agreement=agreement, mean_abs_proba_diff=0.01),
        difference={"accuracy": Estimate(value=value, low=diff[0], high=diff[1], n=500)},
        difference_kind="paired",
    )  # fmt: skip


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


def test_a_good_candidate_passes_every_gate() -> None:
    results = evaluate_gates(comparison(), GATES, T0, LATER)
    assert {r.name: r.verdict for r in results} == {
        "min_requests": Verdict.PASS, "min_duration_s": Verdict.PASS,
        "max_error_rate": Verdict.PASS, "max_p99_ratio": Verdict.PASS,
        "min_agreement": Verdict.PASS, "accuracy_non_inferiority": Verdict.PASS,
    }  # fmt: skip
    assert {r.name for r in results if r.safety} == {"max_error_rate", "max_p99_ratio"}
    assert decide(results) == Decision.ADVANCE


def test_too_early_or_too_few_requests_is_wait_not_pass() -> None:
    early = evaluate_gates(comparison(), GATES, T0, T0 + timedelta(seconds=30))
    assert by_name(early)["min_duration_s"].verdict == Verdict.NOT_ENOUGH_DATA
    assert decide(early) == Decision.WAIT
    few = by_name(evaluate_gates(comparison(candidate=side(2, requests=40)), GATES, T0, LATER))
    for name in ("min_requests", "max_error_rate", "max_p99_ratio"):
        assert few[name].verdict == Verdict.NOT_ENOUGH_DATA, name


def test_error_rate_fails_as_soon_as_the_outcome_is_certain() -> None:
    # 2 failures of 40: even 60 more successes would leave 2 % > 1 %, so abort now
    early = by_name(evaluate_gates(comparison(candidate=side(2, 40, errors=2)), GATES, T0, LATER))
    assert early["max_error_rate"].verdict == Verdict.FAIL and early["max_error_rate"].safety
    # 1 failure of 40 could still end at 1 % of 100: wait
    one = by_name(evaluate_gates(comparison(candidate=side(2, 40, errors=1)), GATES, T0, LATER))
    assert one["max_error_rate"].verdict == Verdict.NOT_ENOUGH_DATA
    many = evaluate_gates(comparison(candidate=side(2, 1000, errors=20)), GATES, T0, LATER)
    assert by_name(many)["max_error_rate"].observed == pytest.approx(0.02)
    assert decide(many) == Decision.ABORT


def test_slow_candidate_is_aborted() -> None:
    results = evaluate_gates(comparison(candidate=side(2, p99=0.016)), GATES, T0, LATER)
    gate = by_name(results)["max_p99_ratio"]
    assert gate.verdict == Verdict.FAIL and gate.observed == pytest.approx(1.6)
    assert decide(results) == Decision.ABORT
    ok = evaluate_gates(comparison(candidate=side(2, p99=0.014)), GATES, T0, LATER)
    assert by_name(ok)["max_p99_ratio"].verdict == Verdict.PASS


def test_disagreeing_shadow_holds_for_a_person() -> None:
    results = evaluate_gates(comparison(agreement=0.80), GATES, T0, LATER)
    assert by_name(results)["min_agreement"].verdict == Verdict.FAIL
    assert decide(results) == Decision.HOLD
    few = evaluate_gates(comparison(shadow_rows=10), GATES, T0, LATER)
    assert by_name(few)["min_agreement"].verdict == Verdict.NOT_ENOUGH_DATA


def test_agreement_does_not_apply_to_a_pure_canary() -> None:
    c = comparison(agreement=None, shadow_rows=0, roles={"canary": 1000})
    results = evaluate_gates(c, GATES, T0, LATER)
    assert by_name(results)["min_agreement"].verdict == Verdict.SKIPPED
    assert decide(results) == Decision.ADVANCE


@pytest.mark.parametrize(
    ("diff", "verdict"),
    [
        ((-0.015, 0.03), Verdict.PASS),  # not worse by more than the 0.02 margin
        ((-0.06, 0.01), Verdict.NOT_ENOUGH_DATA),  # could be worse, could be fine: more labels
        ((-0.09, -0.03), Verdict.FAIL),  # worse beyond the margin
    ],
)
def test_metric_non_inferiority(diff: tuple[float, float], verdict: Verdict) -> None:
    gate = by_name(evaluate_gates(comparison(diff=diff), GATES, T0, LATER))
    assert gate["accuracy_non_inferiority"].verdict == verdict
    assert not gate["accuracy_non_inferiority"].safety


def test_metric_waits_for_labels_or_is_skipped_without_a_margin() -> None:
    unlabelled = comparison(candidate=side(2, labelled=10))
    gate = by_name(evaluate_gates(unlabelled, GATES, T0, LATER))["accuracy_non_inferiority"]
    assert gate.verdict == Verdict.NOT_ENOUGH_DATA
    no_margin = Gates(min_requests=100, metric_margin=None)
    gate = by_name(evaluate_gates(unlabelled, no_margin, T0, LATER))["accuracy_non_inferiority"]
    assert gate.verdict == Verdict.SKIPPED


def test_a_safety_failure_outranks_everything() -> None:
    c = comparison(candidate=side(2, errors=500), agreement=0.5, diff=(-0.5, -0.3))
    assert decide(evaluate_gates(c, GATES, T0, T0)) == Decision.ABORT
