"""The inference core: resolve the model, validate, run, log, measure. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from model_store.errors import VersionNotFoundError
from service.core.codec_v1 import decode_v1_json
from service.core.codec_v2 import decode_v2_json, encode_v2
from service.core.loaded_model import LoadedModel, Prediction
from service.core.registry import ModelRegistry
from service.core.validation import check_prediction, decode_feedback
from service.errors import InvalidInput
from service.iolog.base import IOLog
from service.iolog.record import IORecord, RejectedRecord
from service.metrics import Metrics

V1_ENDPOINT = "v1_predict"
V2_ENDPOINT = "v2_infer"
FEEDBACK_ENDPOINT = "feedback"
# Metric label for a model or version the store does not know: one series, however many names.
UNKNOWN_LABEL = "_unknown"
_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only, matched whole (no trailing newline)


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
    ) -> None:
        self.registry = registry
        self.iolog = iolog
        self.metrics = metrics
        self.max_rows = max_rows
        self.inline_max_rows = inline_max_rows

    async def _run(self, model: LoadedModel, x: np.ndarray) -> Prediction:
        # Small batches run inline (microseconds); large ones leave the event loop free.
        if x.shape[0] <= self.inline_max_rows:
            return model.predict(x)
        return await asyncio.to_thread(model.predict, x)

    async def predict_v1(
        self,
        model_name: str,
        version: str | None,
        raw: bytes,
        header_id: str | None,
        started: float,
    ) -> Result:
        """``raw``: the JSON body as received; decoding is typed by the model's features."""
        v = parse_version(version)
        model = self.registry.peek(model_name, v) or await self.registry.aget(model_name, v)
        req = decode_v1_json(raw, model, self.max_rows)
        request_id = header_id or req.request_id or new_request_id()
        pred = await self._run(model, req.x)
        check_prediction(pred, "instances")
        names = model.class_names
        labels = model.class_names_arr[pred.labels].tolist()
        probs = pred.probabilities.tolist()
        predictions = [
            {"label": lab, "probabilities": dict(zip(names, p, strict=True))}
            for lab, p in zip(labels, probs, strict=True)
        ]
        out = orjson.dumps(
            {
                "model": model.name,
                "version": model.version,
                "request_id": request_id,
                "predictions": predictions,
            }
        )
        await self._finish(model, V1_ENDPOINT, request_id, req.x, pred, req.metadata, started)
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
        v = parse_version(version)
        model = self.registry.peek(model_name, v) or await self.registry.aget(model_name, v)
        req = decode_v2_json(head, binary, model, self.max_rows)
        request_id = header_id or req.request_id or new_request_id()
        pred = await self._run(model, req.x)
        check_prediction(pred, "inputs")
        out, header_len = encode_v2(model, req, pred, request_id)
        await self._finish(model, V2_ENDPOINT, request_id, req.x, pred, {}, started)
        return Result(out, request_id, header_len)

    async def feedback(self, body: Any, started: float, source: str) -> int:
        """Validate ground-truth labels against the model's classes and log them durably, with
        who sent them (``source``), beside any earlier label of the same row."""
        items = decode_feedback(body, self.max_rows)
        served = {name: st.default for name, st in self.registry.models().items() if st.default}
        by_model: dict[str, tuple[LoadedModel, list[tuple[str, int, str]]]] = {}
        for i, (model_name, request_id, row, label) in enumerate(items):
            if model_name is None:
                if len(served) != 1:
                    raise InvalidInput(f"[{i}].model: required when several models are served")
                model_name = next(iter(served))
            model = served.get(model_name) or self.registry.get(model_name)
            if label not in model.class_names:
                raise InvalidInput(
                    f"[{i}].label: {label!r} is not a class of {model.name} "
                    f"({', '.join(model.class_names)})"
                )
            by_model.setdefault(model.name, (model, []))[1].append((request_id, row, label))
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
    ) -> None:
        latency = time.perf_counter() - started
        await self.iolog.append(
            IORecord(
                request_id=request_id,
                received_at=time.time() - latency,
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
            )
        )
        self.metrics.observe(
            model.name,
            str(model.version),
            endpoint,
            200,
            time.perf_counter() - started,
            int(x.shape[0]),
            pred.model_seconds,
        )

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
