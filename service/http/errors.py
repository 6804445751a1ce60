"""The one place where errors become HTTP responses ``{"error": "..."}``."""

from __future__ import annotations

import logging
import time

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service import errors
from service.core.dataplane import DataPlane, new_request_id
from service.http.body import discard_unread, request_body
from service.http.deps import runtime

log = logging.getLogger("vigil.http")


def to_domain(exc: Exception) -> errors.VigilError:
    if isinstance(exc, errors.VigilError):
        return exc
    if isinstance(exc, TimeoutError):
        return errors.Unavailable(str(exc) or "request timed out")
    raise exc


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def install(app: FastAPI, dataplane: DataPlane) -> None:
    async def domain_error(request: Request, exc: Exception) -> Response:
        err = to_domain(exc)
        endpoint = getattr(request.state, "endpoint", None)
        request_id = getattr(request.state, "request_id", None) or new_request_id()
        if endpoint is not None:
            params = request.path_params
            await dataplane.reject(
                endpoint=endpoint,
                model=str(params.get("model", "")),
                version=str(params.get("version", "")),
                status=err.status_code,
                kind=err.kind,
                error=err.message,
                request_id=request_id,
                body=request_body(request),
                started=getattr(request.state, "started", time.perf_counter()),
            )
        if err.status_code == 413:
            settings = runtime(request).settings
            state = request.scope.get("state", {})
            await discard_unread(
                request.receive, state, settings.body_drain_bytes, settings.body_drain_s
            )
        headers = {"X-Request-ID": request_id}
        if err.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(err.status_code, err.message, headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}")

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        dataplane.metrics.error(getattr(request.state, "endpoint", "other"), "internal")
        return error_response(500, "internal error; the incident was logged")

    domain_types = (errors.VigilError, TimeoutError)

    async def respond(request: Request, exc: Exception) -> Response:
        """The same mapping for code that runs outside Starlette's handlers (the fast path)."""
        if isinstance(exc, domain_types):
            return await domain_error(request, exc)
        return await unexpected(request, exc)

    app.state.error_responder = respond
    for cls in domain_types:
        app.add_exception_handler(cls, domain_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
