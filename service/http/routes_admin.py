"""Admin routes: anything that changes what is served. Bearer token required; off without one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.core.dataplane import parse_version
from service.errors import InvalidInput, NotFound
from service.http.admin_body import PromoteBody, ReasonBody, openapi_body, read_body
from service.http.auth import check_bearer
from service.http.deps import Runtime, runtime
from service.http.openapi import ADMIN_ERROR_RESPONSES


def admin_token(rt: Runtime) -> str:
    """The admin token; NotFound when none is set (the admin API is off)."""
    token = rt.settings.admin_token.get_secret_value()
    if not token:
        raise NotFound("the admin API is disabled: set VIGIL_ADMIN_TOKEN to enable it")
    return token


def require_admin(request: Request) -> Runtime:
    rt = runtime(request)
    check_bearer(request, admin_token(rt), "admin API", "VIGIL_ADMIN_TOKEN")
    return rt


T = TypeVar("T")
AdminDep = Annotated[Runtime, Depends(require_admin)]
router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ADMIN_ERROR_RESPONSES)


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


@router.post(
    "/models/{model}/promote",
    summary="Point the alias at a version and serve it",
    openapi_extra=openapi_body(PromoteBody),
)
async def promote(request: Request, model: str, rt: AdminDep) -> Response:
    body = await read_body(request, PromoteBody)
    previous = await asyncio.to_thread(promote_version, rt, model, body.version, body.reason)
    return _json({"model": model, "serving_version": body.version, "previous_version": previous})


@router.post(
    "/models/{model}/rollback",
    summary="Move the alias back to the previous version",
    openapi_extra=openapi_body(ReasonBody),
)
async def rollback(request: Request, model: str, rt: AdminDep) -> Response:
    reason = (await read_body(request, ReasonBody)).reason
    target = await asyncio.to_thread(rollback_model, rt, model, reason)
    return _json({"model": model, "serving_version": target})


def promote_version(rt: Runtime, model: str, version: int, reason: str | None) -> int | None:
    """Serve ``version`` under the alias; returns the version served before. Blocking."""
    # Unknown model/version → 404 before the registry creates any state for the name.
    rt.registry.store.version_dir(model, version)
    return move_alias(
        rt,
        model,
        version,
        lambda: rt.registry.store.set_alias(
            model, version, rt.settings.alias, who=rt.settings.admin_name, reason=reason
        ),
    )


def rollback_model(rt: Runtime, model: str, reason: str | None) -> int:
    """Serve the version the alias named before; returns it. Blocking."""
    store = rt.registry.store
    store.resolve(model, rt.settings.alias)  # an unknown model is a 404, not "nothing to roll back"
    history = store.history(model, rt.settings.alias)
    if len(history) < 2:
        raise InvalidInput(f"{model}: nothing to roll back to")
    target = int(history[-2])
    move_alias(
        rt,
        model,
        target,
        lambda: store.rollback(model, rt.settings.alias, who=rt.settings.admin_name, reason=reason),
    )
    return target


def move_alias(rt: Runtime, model: str, version: int, write_alias: Callable[[], T]) -> T:
    """Load and smoke-test, then move the alias, then switch: in this order.

    A version that cannot load raises before the alias moves, so it is never promoted. Writing
    the alias before switching keeps the alias follower from switching back: until the switch,
    the served version is the one the old alias named, so a stale read of the alias is a no-op.
    """
    rt.registry.get(model, version)
    result = write_alias()
    rt.registry.switch(model, version)
    return result


@router.post("/models/{model}/versions/{version}/load", summary="Load a version")
async def load(model: str, version: str, rt: AdminDep) -> Response:
    v = parse_version(version)
    assert v is not None
    loaded = await rt.registry.aget(model, v)
    return _json({"model": model, "version": loaded.version, "loaded": True})


@router.post("/models/{model}/versions/{version}/unload", summary="Unload a version")
async def unload(model: str, version: str, rt: AdminDep) -> Response:
    v = parse_version(version)
    assert v is not None
    rt.registry.unload(model, v)
    return _json({"model": model, "version": v, "loaded": False})


@router.post("/reload", summary="Re-read the store and retry versions that failed to load")
async def reload(rt: AdminDep) -> Response:
    await asyncio.to_thread(rt.registry.retry_failed)
    _, report = rt.registry.readiness()
    return _json({"models": report})
