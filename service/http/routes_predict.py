"""Prediction routes: V1 named features and V2 (Open Inference Protocol) infer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import V1_ENDPOINT, V2_ENDPOINT, Result
from service.http.body import read_json, read_v2
from service.http.deps import runtime
from service.http.openapi import ERROR_RESPONSES, V1_RESPONSE, V2_RESPONSE
from service.validation import check_request_id

router = APIRouter()


def _begin(request: Request, endpoint: str) -> tuple[float, str | None]:
    started = time.perf_counter()
    request.state.endpoint = endpoint
    request.state.started = started
    header_id = request.headers.get("x-request-id")
    request.state.request_id = header_id if header_id and len(header_id) <= 128 else None
    check_request_id(header_id, "X-Request-ID header")
    return started, header_id


def _json_response(result: Result) -> Response:
    return Response(
        result.body, media_type="application/json", headers={"X-Request-ID": result.request_id}
    )


async def predict_v1(request: Request, model: str, version: str | None) -> Response:
    started, header_id = _begin(request, V1_ENDPOINT)
    rt = runtime(request)
    rt.metrics.request_started()
    try:
        async with asyncio.timeout(rt.settings.request_timeout_s):
            body = await read_json(request, rt.settings.max_body_bytes)
            result = await rt.dataplane.predict_v1(model, version, body, header_id, started)
    finally:
        rt.metrics.request_finished()
    return _json_response(result)


async def infer_v2(request: Request, model: str, version: str | None) -> Response:
    started, header_id = _begin(request, V2_ENDPOINT)
    rt = runtime(request)
    rt.metrics.request_started()
    try:
        async with asyncio.timeout(rt.settings.request_timeout_s):
            body, binary = await read_v2(request, rt.settings.max_body_bytes)
            result = await rt.dataplane.infer_v2(model, version, body, binary, header_id, started)
    finally:
        rt.metrics.request_finished()
    if result.binary_header_length is None:
        return _json_response(result)
    return Response(
        result.body,
        media_type="application/octet-stream",
        headers={
            "X-Request-ID": result.request_id,
            "Inference-Header-Content-Length": str(result.binary_header_length),
        },
    )


_V1: dict[str, Any] = {"responses": {200: V1_RESPONSE, **ERROR_RESPONSES}, "tags": ["predict"]}
_V2: dict[str, Any] = {"responses": {200: V2_RESPONSE, **ERROR_RESPONSES}, "tags": ["v2"]}


@router.post("/v1/models/{model}/predict", summary="Predict with the served version", **_V1)
async def predict(request: Request, model: str) -> Response:
    return await predict_v1(request, model, None)


@router.post(
    "/v1/models/{model}/versions/{version}/predict", summary="Predict with a version", **_V1
)
async def predict_version(request: Request, model: str, version: str) -> Response:
    return await predict_v1(request, model, version)


@router.post("/v2/models/{model}/infer", summary="V2 inference on the served version", **_V2)
async def infer(request: Request, model: str) -> Response:
    return await infer_v2(request, model, None)


@router.post(
    "/v2/models/{model}/versions/{version}/infer", summary="V2 inference on a version", **_V2
)
async def infer_version(request: Request, model: str, version: str) -> Response:
    return await infer_v2(request, model, version)
