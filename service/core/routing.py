"""Which version answers a request during a rollout, decided by its request id alone.

A request id hashes (CRC-32 seeded per purpose, then a multiplicative mix) to a bucket in
0..9999: a canary serves the ids whose bucket is below ``percent`` * 100, a shadow copies those
below ``sample`` * 10000. The same id always lands in the same bucket, so a client retrying with
its ``X-Request-ID`` gets the same version, on any replica and any Python (CRC-32 is fixed by its
standard, unlike the built-in ``hash``, which is salted per process). It is no cryptographic hash
and needs not be one: a client can pick a version anyway (explicit versions are public); it costs
0.3 µs a request where blake2b cost 0.9. A ``Route`` is built by the registry's follower thread
and never changed: the hot path reads one per request with one dict lookup.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from model_store.rollout import Mode, RolloutState
from service.core.loaded_model import LoadedModel

BUCKETS = 10_000
# CRC-32 of each purpose's salt: the seed its request ids' CRC continues from.
_CANARY_SALT = zlib.crc32(b"vigil-canary")
_SHADOW_SALT = zlib.crc32(b"vigil-shadow")
_MIX = 0x9E3779B1  # 2**32 / golden ratio (Fibonacci hashing): spreads CRC's linear bits


def bucket(request_id: str, salt: int) -> int:
    mixed = (zlib.crc32(request_id.encode(), salt) * _MIX) & 0xFFFFFFFF
    return (mixed * BUCKETS) >> 32  # the mixed value's high bits, scaled to 0..BUCKETS-1


@dataclass(frozen=True, slots=True)
class Route:
    mode: Mode
    primary: LoadedModel
    candidate: LoadedModel
    canary_below: int  # buckets [0, canary_below) are served by the candidate
    shadow_below: int  # buckets [0, shadow_below) are copied to the candidate (shadow mode)
    revision: int
    percent: float
    sample: float
    same_schema: bool  # False: decode a canary request with the candidate's own codec

    @classmethod
    def build(cls, state: RolloutState, primary: LoadedModel, candidate: LoadedModel) -> Route:
        canary = state.mode is Mode.CANARY
        return cls(
            mode=state.mode,
            primary=primary,
            candidate=candidate,
            canary_below=round(state.percent * BUCKETS / 100) if canary else 0,
            shadow_below=0 if canary else round(state.sample * BUCKETS),
            revision=state.revision,
            percent=state.percent,
            sample=state.sample,
            same_schema=primary.manifest.features == candidate.manifest.features,
        )

    def serves(self, request_id: str) -> bool:
        """Whether the candidate answers this request (canary)."""
        return self.canary_below > 0 and bucket(request_id, _CANARY_SALT) < self.canary_below

    def shadows(self, request_id: str) -> bool:
        """Whether this request is also run on the candidate (shadow)."""
        if self.shadow_below >= BUCKETS:
            return True
        return self.shadow_below > 0 and bucket(request_id, _SHADOW_SALT) < self.shadow_below
