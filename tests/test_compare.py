"""Comparison statistics of a rollout, on simulated logged rows with known truth.

The bootstrap's job is to say whether a difference in accuracy is real: its 95 % interval of
candidate - primary must cover the true difference about 95 % of the time, exclude 0 when the
gap is large and include 0 when there is none. Tolerance: over 300 seeded simulations the
coverage must be at least 0.90 (measured: 0.933 paired on 600 shadow rows, 0.943 unpaired on a
10 % canary of 6,000 requests; a percentile bootstrap of a proportion covers a little under its
nominal level, and 300 trials have their own noise, SE ≈ 0.013).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from service.offline.compare import compare

CLASSES = np.array(["benign", "malignant"])
TRIALS = 300


def _side(
    rng: np.random.Generator, ids: np.ndarray, y: np.ndarray, accuracy: float, version: int,
    role: str,
) -> pd.DataFrame:  # fmt: skip
    correct = rng.random(len(ids)) < accuracy
    pred = np.where(correct, y, 1 - y)
    p1 = np.clip(np.where(pred == 1, 0.8, 0.2) + rng.normal(0, 0.05, len(ids)), 0, 1)
    return pd.DataFrame(
        {
            "request_id": ids, "row": 0, "version": version, "role": role, "status": 200,
            "latency_s": rng.gamma(4.0, 0.001, len(ids)), "prediction": CLASSES[pred],
            "proba_benign": 1 - p1, "proba_malignant": p1, "label": CLASSES[y],
        }
    )  # fmt: skip


def shadow_traffic(n: int, acc_primary: float, acc_candidate: float, seed: int) -> pd.DataFrame:
    """Every request answered by the primary and, as a shadow, by the candidate; all labelled."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"r{i}" for i in range(n)])
    y = rng.integers(0, 2, n)
    return pd.concat([_side(rng, ids, y, acc_primary, 1, "primary"),
                      _side(rng, ids, y, acc_candidate, 2, "shadow")])  # fmt: skip


def canary_traffic(n: int, acc_primary: float, acc_candidate: float, seed: int) -> pd.DataFrame:
    """Each request answered by one version (90/10), so the sides share no rows."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"r{i}" for i in range(n)])
    y = rng.integers(0, 2, n)
    canary = rng.random(n) < 0.1
    return pd.concat([_side(rng, ids[~canary], y[~canary], acc_primary, 1, "primary"),
                      _side(rng, ids[canary], y[canary], acc_candidate, 2, "canary")])  # fmt: skip


@pytest.mark.parametrize(
    ("traffic", "n"), [(shadow_traffic, 600), (canary_traffic, 6000)], ids=["paired", "unpaired"]
)
def test_difference_interval_covers_the_truth_about_95_percent(traffic: object, n: int) -> None:
    true_diff = 0.80 - 0.85
    covered = 0
    for seed in range(TRIALS):
        frame = traffic(n, 0.85, 0.80, seed)  # type: ignore[operator]
        # the bootstrap's seed must not be the data's: the same stream would correlate them
        d = compare(frame, 1, 2, resamples=1000, seed=10_000 + seed).difference["accuracy"]
        covered += d.low <= true_diff <= d.high
    assert covered / TRIALS >= 0.90, covered


def test_a_large_gap_excludes_zero_and_no_gap_includes_it() -> None:
    gap = compare(shadow_traffic(2000, 0.90, 0.80, seed=1), 1, 2)
    d = gap.difference["accuracy"]
    assert gap.difference_kind == "paired"
    assert d.high < 0 and d.low <= -0.10 <= d.high
    same = compare(shadow_traffic(2000, 0.85, 0.85, seed=2), 1, 2)
    assert same.difference["accuracy"].low < 0 < same.difference["accuracy"].high
    canary = compare(canary_traffic(20000, 0.90, 0.80, seed=3), 1, 2)
    assert canary.difference_kind == "unpaired" and canary.difference["accuracy"].high < 0


def test_pairing_narrows_the_interval() -> None:
    """Judging the same rows with both versions removes the rows' own variance."""
    frame = shadow_traffic(2000, 0.85, 0.85, seed=4)
    paired = compare(frame, 1, 2).difference["accuracy"]
    # the same rows with the shadow relabelled as a canary: compared unpaired
    unpaired = compare(frame.assign(role=frame["role"].replace("shadow", "canary")), 1, 2)
    wide = unpaired.difference["accuracy"]
    assert unpaired.difference_kind == "unpaired"
    # Bernoulli outcomes drawn independently: pairing helps little here, but never hurts much
    assert (paired.high - paired.low) <= (wide.high - wide.low) * 1.1


def test_point_estimates_match_scikit_learn_and_are_seeded() -> None:
    frame = shadow_traffic(500, 0.85, 0.75, seed=5)
    c = compare(frame, 1, 2, seed=7)
    for side, version in ((c.primary, 1), (c.candidate, 2)):
        rows = frame[frame["version"] == version]
        assert side.metrics["accuracy"].value == pytest.approx(
            accuracy_score(rows["label"], rows["prediction"])
        )
        assert side.metrics["f1_macro"].value == pytest.approx(
            f1_score(rows["label"], rows["prediction"], average="macro")
        )
        assert side.metrics["accuracy"].low < side.metrics["accuracy"].value
        assert side.metrics["accuracy"].value < side.metrics["accuracy"].high
    assert c == compare(frame, 1, 2, seed=7)
    assert c != compare(frame, 1, 2, seed=8)


def test_requests_errors_latency_and_agreement() -> None:
    frame = shadow_traffic(1000, 0.9, 0.9, seed=6)
    failed = pd.DataFrame({"request_id": ["x1", "x2", "x3"], "row": 0, "version": 2,
                           "role": "shadow", "status": [503, 500, 422]})  # fmt: skip
    frame = pd.concat([frame, failed], ignore_index=True)
    frame.loc[frame["version"] == 2, "latency_s"] *= 2
    c = compare(frame, 1, 2)
    assert (c.primary.requests, c.candidate.requests) == (1000, 1003)
    assert c.candidate.errors == 2  # a 422 is the client's fault, not the model's
    assert c.candidate.error_rate == pytest.approx(2 / 1003)
    assert c.primary.error_rate == 0
    assert c.candidate.latency_p99_s == pytest.approx(
        np.quantile(
            frame.loc[(frame["version"] == 2) & (frame["status"] == 200), "latency_s"], 0.99
        )
    )
    assert c.candidate.latency_p50_s > c.primary.latency_p50_s  # type: ignore[operator]
    prim = frame[frame["version"] == 1].set_index("request_id")
    cand = frame[(frame["version"] == 2) & (frame["status"] == 200)].set_index("request_id")
    agree = (prim["prediction"] == cand["prediction"].reindex(prim.index)).mean()
    assert c.shadow.rows == 1000 and c.shadow.agreement == pytest.approx(agree)
    expected = np.abs(prim["proba_malignant"] - cand["proba_malignant"].reindex(prim.index))
    assert c.shadow.mean_abs_proba_diff == pytest.approx(expected.mean())
    assert c.candidate_roles == {"shadow": 1003}


def test_without_role_or_labels_every_row_is_primary_and_no_metric_is_claimed() -> None:
    frame = shadow_traffic(300, 0.9, 0.9, seed=8).drop(columns=["role"])
    frame["label"] = None
    c = compare(frame, 1, 2)
    assert c.shadow.rows == 0 and c.shadow.agreement is None
    assert c.candidate_roles == {"primary": 300}
    assert c.primary.metrics == {} and c.difference == {} and c.difference_kind is None
    empty = compare(frame.iloc[0:0], 1, 2)
    assert empty.candidate.requests == 0 and empty.candidate.error_rate is None
    assert empty.candidate.latency_p99_s is None
