"""Ground truth: ``POST /v1/feedback`` with labels by request id and row."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.core.dataplane import FEEDBACK_ENDPOINT
from service.http.auth import check_bearer
from service.http.body import read_json
from service.http.deps import runtime
from service.http.openapi import FEEDBACK_ERROR_RESPONSES

router = APIRouter()
# What the ``source`` of a logged label says: it came with VIGIL_FEEDBACK_TOKEN, or none is
# configured. The server decides it; a client cannot claim one.
TOKEN_SOURCE = "token"  # noqa: S105 (a label, not a secret)
ANONYMOUS_SOURCE = "anonymous"


def _authenticate(request: Request, token: str) -> str:
    if not token:
        return ANONYMOUS_SOURCE
    check_bearer(request, token, "feedback", "VIGIL_FEEDBACK_TOKEN")
    return TOKEN_SOURCE


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["request_id", "label"],
                        "additionalProperties": False,
                        "properties": {
                            "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                            "row": {"type": "integer", "minimum": 0, "maximum": 999999},
                            # a class name; a regressor's label is a finite number
                            "label": {"type": ["string", "number"]},
                            "model": {"type": "string"},
                        },
                    },
                }
            }
        },
    }
}
_OK = {
    "description": "Labels stored",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["accepted"],
                "properties": {"accepted": {"type": "integer"}},
            }
        }
    },
}


@router.post(
    "/v1/feedback",
    tags=["predict"],
    summary="Ground-truth labels for earlier predictions",
    openapi_extra=_BODY,
    responses={200: _OK, **FEEDBACK_ERROR_RESPONSES},
)
async def feedback(request: Request) -> Response:
    request.state.endpoint = FEEDBACK_ENDPOINT
    request.state.started = time.perf_counter()
    rt = runtime(request)
    source = _authenticate(request, rt.settings.feedback_token.get_secret_value())
    body = await read_json(request, rt.settings.max_body_bytes)
    accepted = await rt.dataplane.feedback(body, request.state.started, source)
    return Response(orjson.dumps({"accepted": accepted}), media_type="application/json")
