"""The PII policy of each model version (from its manifest), and what it lets the log keep.

Served requests: features and metadata keys marked ``drop`` are left out, ``hash`` ones become
HMAC-SHA256 digests with ``VIGIL_PII_SECRET`` (frames.encode_prediction applies the rules).

Rejected requests keep their body (an excerpt of 2 KiB) only when the named model is known to
have no PII policy in any version the request can reach. Otherwise, and whenever the policy is
unknown (a manifest that cannot be read, an unknown model or version), the body is *withheld*:
the record keeps its size and a keyed HMAC of it, never its text. We do not redact such bodies
key by key because a refused body is by definition malformed: it may be cut at 2 KiB, not be
JSON, or hold the PII value under a misspelt or nested key, so redaction cannot be trusted to
find it. The HMAC still lets an operator match a body a client sends again. Errors about one
field keep the field's path but not their detail (range and category errors quote the value).

Fail closed: only policies read successfully are cached (a registered version's manifest does
not change); a failed read is retried at the next request and, until it succeeds, predictions of
that version are refused (LogUnavailable) rather than logged in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass

from model_store.errors import ModelNotFoundError, StoreError, VersionNotFoundError
from model_store.manifest import PiiPolicy
from model_store.store import ModelStore
from service.errors import LogUnavailable
from service.iolog.frames import PiiRules
from service.iolog.record import RejectedRecord
from service.metrics import DeliveryMetrics

log = logging.getLogger("vigil.iolog")
EXCERPT_BYTES = 2048
# "instances[0].mean_radius: value 1e+300 is out of range" → the path, not the detail.
_FIELD_DETAIL = re.compile(r"^(?P<field>[^\s:]*\.[^\s:]+|inputs\[[^\]]*\][^\s:]*): .*$", re.DOTALL)


class PolicyUnknown(Exception):
    """A model version's PII policy cannot be read (its manifest is missing or unreadable)."""


@dataclass(frozen=True, slots=True)
class Policy:
    features: dict[str, PiiPolicy]
    metadata: dict[str, PiiPolicy]

    @property
    def names(self) -> frozenset[str]:
        return frozenset((*self.features, *self.metadata))


class PiiPolicies:
    def __init__(self, store: ModelStore, secret: str, metrics: DeliveryMetrics) -> None:
        self._store = store
        self._secret = secret
        self._metrics = metrics
        self._known: dict[tuple[str, int], Policy] = {}
        self._failing: set[tuple[str, int]] = set()  # logged once until it reads again

    def policy(self, model: str, version: int) -> Policy:
        """The version's policy; raises PolicyUnknown (never cached) if it cannot be read."""
        key = (model, version)
        known = self._known.get(key)
        if known is not None:
            return known
        try:
            m = self._store.manifest(model, version)
        except (ModelNotFoundError, VersionNotFoundError) as exc:
            # a client named a version that does not exist: nothing failed here, nothing to log
            raise PolicyUnknown(f"PII policy of {model} v{version} unknown: {exc}") from exc
        except (StoreError, OSError) as exc:
            self._metrics.iolog_failures.labels("pii_policy").inc()
            if key not in self._failing:
                self._failing.add(key)
                log.error("PII policy of %s v%s unknown", model, version, exc_info=exc)
            raise PolicyUnknown(f"PII policy of {model} v{version} unknown: {exc}") from exc
        if key in self._failing:
            self._failing.discard(key)
            log.info("PII policy of %s v%s readable again", model, version)
        known = self._known[key] = Policy(
            {f.name: f.pii for f in m.features if f.pii is not None}, dict(m.metadata_pii)
        )
        return known

    def rules(self, model: str, version: int) -> PiiRules | None:
        """What encode_prediction applies; None when the version names no PII."""
        try:
            p = self.policy(model, version)
        except PolicyUnknown as exc:
            raise LogUnavailable(f"{exc}; its inputs are not logged in clear") from None
        if not p.names:
            return None
        if PiiPolicy.HASH in (*p.features.values(), *p.metadata.values()) and not self._secret:
            raise LogUnavailable(f"{model} v{version} hashes PII but VIGIL_PII_SECRET is not set")
        return PiiRules(p.features, p.metadata, self._secret.encode())

    # -- rejected requests ---------------------------------------------------------------------
    def reachable_names(self, model: str, version: str) -> frozenset[str] | None:
        """PII names of the versions a request could reach; None when any policy is unknown.
        Without a version, every version counts: the alias may move between request and log."""
        if version:
            if not (version.isascii() and version.isdigit()) or len(version) > 9:
                return None
            versions = [int(version)]
        else:
            try:
                versions = self._store.versions(model)
            except OSError:
                log.exception("cannot list the versions of %s", model)
                return None
            if not versions:
                return None  # unknown model (or "_unknown"): its body could hold anything
        names: set[str] = set()
        for v in versions:
            try:
                names |= self.policy(model, v).names
            except PolicyUnknown:
                return None
        return frozenset(names)

    def rejected(self, record: RejectedRecord) -> tuple[str, str]:
        """(error, body) as the log may keep them."""
        names = self.reachable_names(record.model, record.version)
        if names is not None and not names:
            return record.error, excerpt(record.body)
        return scrub_error(record.error), self.withheld(record.body)

    def withheld(self, body: bytes) -> str:
        if not self._secret:  # an unkeyed hash of a short body could be guessed: size only
            return f"<withheld: {len(body)} bytes>"
        digest = hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
        return f"<withheld: {len(body)} bytes, hmac-sha256 {digest}>"


def excerpt(body: bytes) -> str:
    return body[:EXCERPT_BYTES].decode("utf-8", errors="replace")


def scrub_error(error: str) -> str:
    """An error about one field keeps the field's path; its detail may quote the value."""
    m = _FIELD_DETAIL.match(error)
    return f"{m['field']}: (detail withheld: PII policy)" if m else error
