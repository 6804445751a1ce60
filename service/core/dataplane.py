"""The inference core: resolve the model, validate, run, log, measure. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson

from model_store.errors import VersionNotFoundError
from service.core.codec_v1 import V1Request, decode_v1_json
from service.core.codec_v2 import V2Request, decode_v2_json, encode_v2
from service.core.loaded_model import LoadedModel, Prediction
from service.core.registry import ModelRegistry
from service.core.routing import Route
from service.core.shadow import Shadow, ShadowBatcher, failed_shadow, shadow_run
from service.core.validation import (
    all_finite,
    check_label,
    check_prediction,
    decode_feedback,
    unseen_counts,
)
from service.errors import InvalidInput
from service.iolog.base import IOLog
from service.iolog.frames import CANARY, PRIMARY, SHADOW
from service.iolog.record import IORecord, RejectedRecord
from service.metrics import Metrics

log = logging.getLogger("vigil.dataplane")

V1_ENDPOINT = "v1_predict"
V2_ENDPOINT = "v2_infer"
FEEDBACK_ENDPOINT = "feedback"
# Metric label for a model or version the store does not know: one series, however many names.
UNKNOWN_LABEL = "_unknown"
_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only, matched whole (no trailing newline)


class _Decoded(Protocol):
    @property
    def x(self) -> np.ndarray: ...

    @property
    def request_id(self) -> str | None: ...


_Req = TypeVar("_Req", bound=_Decoded)


@dataclass(slots=True)
class Result:
    body: bytes
    request_id: str
    binary_header_length: int | None = None


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """Unique without a syscall: a random per-process prefix and a counter (32 hex chars)."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


# Metadata key of a shadow row whose candidate failed: why (the row's status is 500).
SHADOW_ERROR_KEY = "vigil_shadow_error"


def _v1_predictions(model: LoadedModel, pred: Prediction) -> list[dict[str, Any]]:
    """Per row: ``{"prediction": value}`` for a regressor; label and probabilities by class."""
    if pred.values is not None:
        return [{"prediction": v} for v in pred.values.tolist()]
    names = model.class_names
    labels = model.class_names_arr[pred.labels].tolist()
    probs = pred.probabilities.tolist()
    return [
        {"label": lab, "probabilities": dict(zip(names, p, strict=True))}
        for lab, p in zip(labels, probs, strict=True)
    ]


def parse_version(version: str | None) -> int | None:
    if version is None:
        return None
    if not _VERSION.fullmatch(version):
        raise VersionNotFoundError(f"version {version[:40]!r} not found: versions are integers")
    return int(version)


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        iolog: IOLog,
        metrics: Metrics,
        *,
        max_rows: int,
        inline_max_rows: int = 256,
        shadow_timeout_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.iolog = iolog
        self.metrics = metrics
        self.max_rows = max_rows
        self.inline_max_rows = inline_max_rows
        # A shadow candidate slower than this on a large batch is logged as failed; the client
        # waits for it no longer (small batches run inline: microseconds).
        self.shadow_timeout_s = shadow_timeout_s
        self._shadows = ShadowBatcher(inline_max_rows)

    async def _run(self, model: LoadedModel, x: np.ndarray) -> Prediction:
        # Small batches run inline (microseconds); large ones leave the event loop free.
        if x.shape[0] <= self.inline_max_rows:
            return model.predict(x)
        return await asyncio.to_thread(model.predict, x)

    def _route(self, model_name: str, version: int | None, model: LoadedModel) -> Route | None:
        """The rollout route of a request for the served default; explicit versions bypass it."""
        if version is not None:
            return None
        route = self.registry.route(model_name)
        if route is None or route.primary is not model:
            return None  # the alias moved under the route: the follower rebuilds it
        return route

    async def _answer(
        self,
        model_name: str,
        version: str | None,
        header_id: str | None,
        decode: Callable[[LoadedModel], _Req],
        where: str,
    ) -> tuple[LoadedModel, _Req, str, Prediction, str, Shadow | None]:
        """One request of either protocol, resolved, decoded, routed and run: (who answered, its
        request, its id, the prediction, the row role, the candidate's extra row to log)."""
        v = parse_version(version)
        model = self.registry.peek(model_name, v) or await self.registry.aget(model_name, v)
        model, req, request_id, role, route = self._resolve(model_name, v, model, header_id, decode)
        shadow: Shadow | None = None
        if route is None or (role is PRIMARY and not route.shadows(request_id)):
            pred = await self._run(model, req.x)  # most requests of a canary: no detour
        else:
            model, req, pred, role, shadow = await self._serve_rollout(
                model, req, role, route, request_id, decode
            )
        check_prediction(pred, where)
        return model, req, request_id, pred, role, shadow

    def _resolve(
        self,
        model_name: str,
        version: int | None,
        model: LoadedModel,
        header_id: str | None,
        decode: Callable[[LoadedModel], _Req],
    ) -> tuple[LoadedModel, _Req, str, str, Route | None]:
        """Who answers (``model``, or a canary's candidate), the decoded request, its id, the
        row role, and the rollout's route (None: no rollout applies)."""
        route = self._route(model_name, version, model)
        role = PRIMARY
        # A client's id is known before decoding: route first, decode once with the right codec.
        if route is not None and header_id and route.serves(header_id):
            model, role = route.candidate, CANARY
        req = decode(model)
        request_id = header_id or req.request_id or new_request_id()
        if route is not None and not header_id and route.serves(request_id):
            model, role = route.candidate, CANARY
            if not route.same_schema:
                req = decode(model)
        return model, req, request_id, role, route

    async def _serve_rollout(
        self,
        model: LoadedModel,
        req: _Req,
        role: str,
        route: Route,
        request_id: str,
        decode: Callable[[LoadedModel], _Req],
    ) -> tuple[LoadedModel, _Req, Prediction, str, Shadow | None]:
        """Run a request the rollout's candidate answers (canary) or shadows: (who answered, its
        request, prediction, role, the candidate's extra row to log). A canary candidate whose
        output is not finite hands the request to the primary (the client never gets the
        candidate's failure); the failure is logged as a canary row with status 500, which the
        error-rate gate counts."""
        if role is CANARY:
            start = time.perf_counter()
            try:
                pred = await self._run(model, req.x)
            except Exception as exc:  # the candidate's fault: its request passed its schema
                log.warning("canary candidate %s v%s failed: %r", model.name, model.version, exc)
                error = f"{type(exc).__name__}: {exc}"[:500]
            else:
                if all_finite(pred.answers):
                    return model, req, pred, role, None
                error = "InvalidInput: the canary candidate's answers are not finite numbers"
            primary = route.primary
            preq = req if route.same_schema else decode(primary)
            failed = Shadow(model, req.x, None, error, time.perf_counter() - start, CANARY)
            return primary, preq, await self._run(primary, preq.x), PRIMARY, failed
        pred, shadow = await self._run_shadowed(model, route, req.x, decode)  # shadowed
        return model, req, pred, role, shadow

    async def _run_shadowed(
        self,
        primary: LoadedModel,
        route: Route,
        x: np.ndarray,
        decode: Callable[[LoadedModel], _Decoded],
    ) -> tuple[Prediction, Shadow]:
        """The primary's prediction (which alone reaches the client), and the candidate's run on
        the same request. Nothing the candidate does changes the primary's answer."""
        candidate = route.candidate
        try:
            cx = x if route.same_schema else decode(candidate).x
        except Exception as exc:  # the request does not fit the candidate's schema
            dtype = object if candidate.columns else np.float64
            blank = np.full((x.shape[0], candidate.n_features), np.nan, dtype=dtype)
            return await self._run(primary, x), failed_shadow(candidate, blank, exc, 0.0)
        if x.shape[0] <= self.inline_max_rows:
            pred = primary.predict(x)
            return pred, await self._shadows.run(candidate, cx)
        # Large batches: both at once in threads, so the client waits for the slower, not both.
        first = asyncio.to_thread(primary.predict, x)
        second = asyncio.ensure_future(asyncio.to_thread(shadow_run, candidate, cx))
        pred = await first
        try:
            shadow = await asyncio.wait_for(asyncio.shield(second), self.shadow_timeout_s)
        except TimeoutError:
            err = TimeoutError(f"the candidate took over {self.shadow_timeout_s} s")
            shadow = failed_shadow(candidate, cx, err, self.shadow_timeout_s)
        return pred, shadow

    async def predict_v1(
        self,
        model_name: str,
        version: str | None,
        raw: bytes,
        header_id: str | None,
        started: float,
    ) -> Result:
        """``raw``: the JSON body as received; decoding is typed by the model's features."""

        def decode(m: LoadedModel) -> V1Request:
            return decode_v1_json(raw, m, self.max_rows)

        model, req, request_id, pred, role, shadow = await self._answer(
            model_name, version, header_id, decode, "instances"
        )
        out = orjson.dumps(
            {
                "model": model.name,
                "version": model.version,
                "request_id": request_id,
                "predictions": _v1_predictions(model, pred),
            }
        )
        await self._finish(
            model, V1_ENDPOINT, request_id, req.x, pred, req.metadata, started, role, shadow
        )
        return Result(out, request_id)

    async def infer_v2(
        self,
        model_name: str,
        version: str | None,
        head: bytes,
        binary: bytes,
        header_id: str | None,
        started: float,
    ) -> Result:
        """``head``: the JSON part of the body as received; ``binary``: the tensor bytes after
        it (binary data extension), empty without."""

        def decode(m: LoadedModel) -> V2Request:
            return decode_v2_json(head, binary, m, self.max_rows)

        model, req, request_id, pred, role, shadow = await self._answer(
            model_name, version, header_id, decode, "inputs"
        )
        out, header_len = encode_v2(model, req, pred, request_id)
        await self._finish(model, V2_ENDPOINT, request_id, req.x, pred, {}, started, role, shadow)
        return Result(out, request_id, header_len)

    async def feedback(self, body: Any, started: float, source: str) -> int:
        """Validate ground-truth labels against the model's classes (a regressor's: finite
        numbers, logged as their ``repr``) and log them durably, with who sent them
        (``source``), beside any earlier label of the same row."""
        items = decode_feedback(body, self.max_rows)
        served = {name: st.default for name, st in self.registry.models().items() if st.default}
        by_model: dict[str, tuple[LoadedModel, list[tuple[str, int, str]]]] = {}
        for i, (model_name, request_id, row, label) in enumerate(items):
            if model_name is None:
                if len(served) != 1:
                    raise InvalidInput(f"[{i}].model: required when several models are served")
                model_name = next(iter(served))
            model = served.get(model_name) or self.registry.get(model_name)
            text = check_label(model, label, f"[{i}].label")
            by_model.setdefault(model.name, (model, []))[1].append((request_id, row, text))
        for model, rows in by_model.values():
            await self.iolog.append_feedback(model.name, rows, source)
            self.metrics.observe(
                model.name, str(model.version), FEEDBACK_ENDPOINT, 200,
                time.perf_counter() - started, len(rows), None,
            )  # fmt: skip
        return len(items)

    async def _finish(
        self,
        model: LoadedModel,
        endpoint: str,
        request_id: str,
        x: np.ndarray,
        pred: Prediction,
        metadata: dict[str, str],
        started: float,
        role: str = PRIMARY,
        shadow: Shadow | None = None,
    ) -> None:
        latency = time.perf_counter() - started
        received_at = time.time() - latency
        record = IORecord(
            request_id=request_id,
            received_at=received_at,
            model=model.name,
            version=model.version,
            sha256=model.sha256,
            endpoint=endpoint,
            status=200,
            latency_s=latency,
            feature_names=model.feature_names,
            inputs=x,
            class_names=model.class_names,
            labels=pred.labels,
            probabilities=pred.probabilities,
            metadata=metadata,
            role=role,
            values=pred.values,
            categorical=model.categorical,
        )
        if model.categorical:
            self.metrics.unseen(model.name, str(model.version), unseen_counts(model, x))
        if shadow is None:
            await self.iolog.append(record)
        else:
            # Latency the candidate would have given: the request's own, its model time swapped.
            shadow_latency = max(latency - pred.model_seconds + shadow.seconds, 0.0)
            copy = self._shadow_record(record, shadow, shadow_latency)
            # One write (and fsync) for both: an acknowledged request has its shadow row too,
            # even after a kill -9.
            await self.iolog.append_many((record, copy))
            if shadow.role == SHADOW:
                self.metrics.observe_shadow(
                    shadow.model.name, str(shadow.model.version), 200 if shadow.pred else 500,
                    shadow_latency, shadow.error is not None,
                )  # fmt: skip
            else:
                self.metrics.canary_fallback(shadow.model.name, str(shadow.model.version))
        self.metrics.observe(
            model.name,
            str(model.version),
            endpoint,
            200,
            time.perf_counter() - started,
            int(x.shape[0]),
            pred.model_seconds,
            role,
        )

    @staticmethod
    def _shadow_record(primary: IORecord, shadow: Shadow, latency: float) -> IORecord:
        cand = shadow.model
        rows = shadow.x.shape[0]
        values = None
        if shadow.pred is not None:
            labels, proba = shadow.pred.labels, shadow.pred.probabilities
            values = shadow.pred.values
        else:
            labels = np.zeros(rows, np.int64)
            proba = np.full((rows, len(cand.class_names)), np.nan, np.float32)
            values = np.full(rows, np.nan) if cand.regression else None
        metadata = primary.metadata
        if shadow.error is not None:
            metadata = {**metadata, SHADOW_ERROR_KEY: shadow.error}
        return IORecord(
            request_id=primary.request_id, received_at=primary.received_at, model=cand.name,
            version=cand.version, sha256=cand.sha256, endpoint=primary.endpoint,
            status=200 if shadow.error is None else 500, latency_s=latency,
            feature_names=cand.feature_names, inputs=shadow.x, class_names=cand.class_names,
            labels=labels, probabilities=proba, metadata=metadata, role=shadow.role,
            values=values, categorical=cand.categorical,
        )  # fmt: skip

    async def reject(
        self,
        *,
        endpoint: str,
        model: str,
        version: str,
        status: int,
        kind: str,
        error: str,
        request_id: str,
        body: bytes,
        started: float,
    ) -> None:
        """Count and log a request answered with an error. Never raises."""
        model_label, version_label = self._labels(model, version)
        self.metrics.error(endpoint, kind)
        self.metrics.observe(
            model_label, version_label, endpoint, status, time.perf_counter() - started, 0, None
        )
        await self.iolog.append_rejected(
            RejectedRecord(
                request_id=request_id,
                received_at=time.time(),
                model=model_label,
                version=version,
                endpoint=endpoint,
                status=status,
                error=error,
                body=body,
            )
        )

    def _labels(self, model: str, version: str) -> tuple[str, str]:
        """Metric labels for a request's model and version: names the registry holds, else
        ``_unknown``, so that requests for made-up names cannot add series without limit."""
        state = self.registry.state(model)
        if state is None:
            return UNKNOWN_LABEL, (UNKNOWN_LABEL if version else "-")
        if not version:
            return model, "-"
        try:
            number = parse_version(version)
        except VersionNotFoundError:
            return model, UNKNOWN_LABEL
        if number in state.loaded or number in state.failures:
            return model, str(number)
        return model, UNKNOWN_LABEL
