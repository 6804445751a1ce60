"""Prediction routes: V1 named features and V2 (Open Inference Protocol) infer.

The handlers work on the raw ASGI scope and receive channel and return a ``Reply`` (body and
header pairs): ``VigilApp`` sends it without building Starlette request or response objects
(see ``fastpath``), and the FastAPI routes below, which the OpenAPI document describes, wrap the
same handlers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from service.core.dataplane import V1_ENDPOINT, V2_ENDPOINT, Result
from service.core.validation import check_request_id
from service.http.body import header, raw_headers, receive_json_bytes, receive_v2
from service.http.deadline import Deadline
from service.http.deps import Runtime, runtime
from service.http.openapi import ERROR_RESPONSES, V1_RESPONSE, V2_RESPONSE

router = APIRouter()
_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    headers: list[tuple[bytes, bytes]]

    def response(self) -> Response:
        response = Response(self.body)
        response.raw_headers = self.headers
        return response


def _begin(scope: Scope, endpoint: str) -> tuple[float, dict[bytes, bytes], str | None]:
    """Note what the error path needs (in the scope's state, which ``request.state`` reads)."""
    started = time.perf_counter()
    state = scope.setdefault("state", {})
    state["endpoint"] = endpoint
    state["started"] = started
    headers = raw_headers(scope)
    header_id = header(headers, b"x-request-id")
    state["request_id"] = header_id if header_id and len(header_id) <= 128 else None
    check_request_id(header_id, "X-Request-ID header")
    return started, headers, header_id


def _reply(result: Result, content_type: tuple[bytes, bytes] = _JSON) -> Reply:
    return Reply(
        result.body,
        [
            content_type,
            (b"content-length", str(len(result.body)).encode()),
            (b"x-request-id", result.request_id.encode()),
        ],
    )


async def predict_v1(
    rt: Runtime, scope: Scope, receive: Receive, model: str, version: str | None
) -> Reply:
    started, headers, header_id = _begin(scope, V1_ENDPOINT)
    rt.metrics.request_started()
    try:
        with Deadline(rt.settings.request_timeout_s):
            raw = await receive_json_bytes(
                headers, receive, scope["state"], rt.settings.max_body_bytes
            )
            result = await rt.dataplane.predict_v1(model, version, raw, header_id, started)
    finally:
        rt.metrics.request_finished()
    return _reply(result)


async def infer_v2(
    rt: Runtime, scope: Scope, receive: Receive, model: str, version: str | None
) -> Reply:
    started, headers, header_id = _begin(scope, V2_ENDPOINT)
    rt.metrics.request_started()
    try:
        with Deadline(rt.settings.request_timeout_s):
            head, binary = await receive_v2(
                headers, receive, scope["state"], rt.settings.max_body_bytes
            )
            result = await rt.dataplane.infer_v2(model, version, head, binary, header_id, started)
    finally:
        rt.metrics.request_finished()
    if result.binary_header_length is None:
        return _reply(result)
    reply = _reply(result, _BINARY)
    length = str(result.binary_header_length).encode()
    reply.headers.append((b"inference-header-content-length", length))
    return reply


_V1: dict[str, Any] = {"responses": {200: V1_RESPONSE, **ERROR_RESPONSES}, "tags": ["predict"]}
_V2: dict[str, Any] = {"responses": {200: V2_RESPONSE, **ERROR_RESPONSES}, "tags": ["v2"]}


@router.post("/v1/models/{model}/predict", summary="Predict with the served version", **_V1)
async def predict(request: Request, model: str) -> Response:
    reply = await predict_v1(runtime(request), request.scope, request.receive, model, None)
    return reply.response()


@router.post(
    "/v1/models/{model}/versions/{version}/predict", summary="Predict with a version", **_V1
)
async def predict_version(request: Request, model: str, version: str) -> Response:
    reply = await predict_v1(runtime(request), request.scope, request.receive, model, version)
    return reply.response()


@router.post("/v2/models/{model}/infer", summary="V2 inference on the served version", **_V2)
async def infer(request: Request, model: str) -> Response:
    reply = await infer_v2(runtime(request), request.scope, request.receive, model, None)
    return reply.response()


@router.post(
    "/v2/models/{model}/versions/{version}/infer", summary="V2 inference on a version", **_V2
)
async def infer_version(request: Request, model: str, version: str) -> Response:
    reply = await infer_v2(runtime(request), request.scope, request.receive, model, version)
    return reply.response()
