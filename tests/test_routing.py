"""Request-id buckets: the same on every replica, release and Python, and evenly spread."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from service.core.routing import _CANARY_SALT, _SHADOW_SALT, BUCKETS, bucket


@pytest.mark.parametrize(
    ("request_id", "canary", "shadow"),
    [
        ("c-0", 3909, 4671),
        ("c-1", 1950, 6486),
        ("req-42", 37, 9453),
        ("0123456789abcdef0000000000000001", 5208, 1081),
    ],
)
def test_buckets_are_pinned(request_id: str, canary: int, shadow: int) -> None:
    # Replicas of different releases serve one rollout side by side: a changed mapping would
    # move a retrying client from one version to the other.
    assert bucket(request_id, _CANARY_SALT) == canary
    assert bucket(request_id, _SHADOW_SALT) == shadow


def test_another_process_with_another_hash_seed_agrees() -> None:
    ids = [f"id-{i}" for i in range(50)]
    code = (
        "import sys; from service.core.routing import bucket, _CANARY_SALT; "
        "print([bucket(i, _CANARY_SALT) for i in sys.argv[1:]])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, *ids], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str([bucket(i, _CANARY_SALT) for i in ids])


@pytest.mark.parametrize(
    "ids",
    [
        [f"c-{i}" for i in range(40_000)],  # a client's own sequential ids
        [f"{uuid.uuid4().hex[:16]}{i:016x}" for i in range(1, 40_001)],  # Vigil's own ids
    ],
    ids=["client", "generated"],
)
def test_sequential_ids_spread_evenly(ids: list[str]) -> None:
    for salt in (_CANARY_SALT, _SHADOW_SALT):
        buckets = [bucket(i, salt) for i in ids]
        assert min(buckets) >= 0 and max(buckets) < BUCKETS
        for percent in (1, 10, 50):
            share = 100 * sum(b < percent * 100 for b in buckets) / len(buckets)
            assert abs(share - percent) < max(0.3, percent * 0.05), (percent, share)
        # a chi-square over 100 equal ranges stays well under its 0.1 % critical value (148)
        counts = [0] * 100
        for b in buckets:
            counts[b * 100 // BUCKETS] += 1
        expected = len(buckets) / 100
        assert sum((c - expected) ** 2 / expected for c in counts) < 148


def test_canary_and_shadow_salts_are_independent() -> None:
    ids = [f"x-{i}" for i in range(20_000)]
    both = sum(bucket(i, _CANARY_SALT) < 1000 and bucket(i, _SHADOW_SALT) < 1000 for i in ids)
    assert abs(100 * both / len(ids) - 1.0) < 0.3  # 10 % of 10 %, as for unrelated draws
