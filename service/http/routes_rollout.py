"""Rollout and history routes: thin over model_store.rollout and the store's audit trail.

Changes need the admin token (``require_admin``) and are recorded under VIGIL_ADMIN_NAME;
reading the state and the history is open, like the model listing.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

from model_store.rollout import Gates, Mode, Rollouts, RolloutState
from service.http.admin_body import REASON_CHARS, AdminBody, openapi_body, read_body
from service.http.deps import Runtime, runtime
from service.http.openapi import ADMIN_ERROR_RESPONSES, error_responses
from service.http.routes_admin import AdminDep, move_alias

admin = APIRouter(prefix="/v1/admin", tags=["rollout"], responses=ADMIN_ERROR_RESPONSES)
public = APIRouter(prefix="/v1", tags=["rollout"], responses=error_responses(404, 422))


class StartBody(AdminBody):
    version: int = Field(ge=1, description="The candidate version.")
    mode: Mode
    percent: float | None = Field(None, description="Canary share of requests (default 10).")
    sample: float = Field(1.0, description="Shadow share of requests copied to the candidate.")
    auto: bool = False
    gates: Gates = Field(default_factory=Gates)
    reason: str | None = Field(None, max_length=REASON_CHARS)


class StepBody(AdminBody):
    percent: float
    revision: int | None = Field(None, description="Refuse (409) if the rollout changed since.")
    reason: str | None = Field(None, max_length=REASON_CHARS)


class EndBody(AdminBody):
    revision: int | None = Field(None, description="Refuse (409) if the rollout changed since.")
    reason: str | None = Field(None, max_length=REASON_CHARS)


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _state(state: RolloutState) -> dict[str, Any]:
    return state.model_dump(mode="json")


def _rollouts(rt: Runtime) -> Rollouts:
    return Rollouts(rt.registry.store)


@admin.post(
    "/models/{model}/rollout",
    summary="Start a shadow or canary rollout",
    openapi_extra=openapi_body(StartBody),
)
async def start(request: Request, model: str, rt: AdminDep) -> Response:
    body = await read_body(request, StartBody)
    state = await asyncio.to_thread(
        _rollouts(rt).start,
        model,
        body.version,
        body.mode,
        percent=body.percent,
        sample=body.sample,
        auto=body.auto,
        gates=body.gates,
        alias=rt.settings.alias,
        who=rt.settings.admin_name,
        reason=body.reason,
    )
    return _json(_state(state))


@admin.post(
    "/models/{model}/rollout/step",
    summary="Change the canary share",
    openapi_extra=openapi_body(StepBody),
)
async def step(request: Request, model: str, rt: AdminDep) -> Response:
    body = await read_body(request, StepBody)
    state = await asyncio.to_thread(
        _rollouts(rt).step,
        model,
        body.percent,
        expected_revision=body.revision,
        who=rt.settings.admin_name,
        reason=body.reason,
    )
    return _json(_state(state))


@admin.post(
    "/models/{model}/rollout/promote",
    summary="Serve the candidate; end the rollout",
    openapi_extra=openapi_body(EndBody),
)
async def promote(request: Request, model: str, rt: AdminDep) -> Response:
    body = await read_body(request, EndBody)
    rollouts = _rollouts(rt)
    state = await asyncio.to_thread(rollouts.require, model)
    # Load and smoke-test the candidate before the alias moves, as a plain promote does.
    ended = await asyncio.to_thread(
        move_alias,
        rt,
        model,
        state.candidate_version,
        lambda: rollouts.promote(
            model,
            expected_revision=body.revision if body.revision is not None else state.revision,
            who=rt.settings.admin_name,
            reason=body.reason,
        ),
    )
    return _json(
        {"model": model, "serving_version": ended.candidate_version, "ended": _state(ended)}
    )


@admin.post(
    "/models/{model}/rollout/abort",
    summary="End the rollout; the primary keeps serving",
    openapi_extra=openapi_body(EndBody),
)
async def abort(request: Request, model: str, rt: AdminDep) -> Response:
    body = await read_body(request, EndBody)
    ended = await asyncio.to_thread(
        _rollouts(rt).abort,
        model,
        expected_revision=body.revision,
        who=rt.settings.admin_name,
        reason=body.reason,
    )
    return _json({"model": model, "serving_version": ended.primary_version, "ended": _state(ended)})


@public.get("/models/{model}/rollout", summary="The running rollout, its comparison and gates")
async def status(request: Request, model: str) -> Response:
    rt = runtime(request)
    state = await asyncio.to_thread(_rollouts(rt).require, model)
    report = await asyncio.to_thread(rt.reports.report, state)
    return _json({**_state(state), **report})


@public.get("/models/{model}/history", summary="Who changed what is served, when and why")
async def history(
    request: Request, model: str, limit: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    entries = await asyncio.to_thread(runtime(request).registry.store.changes, model, limit)
    return _json([e.model_dump(mode="json") for e in entries])
