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

from model_store import errors as store_errors
from service import errors
from service.core.dataplane import DataPlane, new_request_id
from service.core.registry import ModelNotReadyError, VersionInUseError, VersionLoadError
from service.http.body import body_excerpt

log = logging.getLogger("vigil.http")

# Store-level errors and the domain error each one means to a client.
_STORE_TO_DOMAIN: dict[type[Exception], type[errors.VigilError]] = {
    store_errors.ModelNotFoundError: errors.ModelNotFound,
    store_errors.VersionNotFoundError: errors.VersionNotFound,
    ModelNotReadyError: errors.ModelNotReady,
    VersionLoadError: errors.Unavailable,
    store_errors.IntegrityError: errors.Unavailable,
    store_errors.ParityError: errors.InvalidInput,
    store_errors.RegistrationError: errors.Conflict,
    store_errors.StoreReadOnlyError: errors.Conflict,
    store_errors.RolloutNotFoundError: errors.NotFound,
    store_errors.RolloutConflictError: errors.Conflict,
    store_errors.RolloutInvalidError: errors.InvalidInput,
    VersionInUseError: errors.Conflict,
    TimeoutError: errors.Unavailable,
}


def to_domain(exc: Exception) -> errors.VigilError:
    if isinstance(exc, errors.VigilError):
        return exc
    for cls in type(exc).__mro__:
        mapped = _STORE_TO_DOMAIN.get(cls)
        if mapped is not None:
            message = str(exc) or "request timed out"
            return mapped(message)
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
            model = params.get("model", "")
            await dataplane.reject(
                endpoint=endpoint,
                model=model if model in dataplane.registry.models() else "_unknown",
                version=str(params.get("version", "")),
                status=err.status_code,
                kind=err.kind,
                error=err.message,
                request_id=request_id,
                body_excerpt=body_excerpt(request),
                started=getattr(request.state, "started", time.perf_counter()),
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

    domain_types = (errors.VigilError, store_errors.StoreError, TimeoutError)

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
