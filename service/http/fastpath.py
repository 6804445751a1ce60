"""Prediction requests skip the framework's routing and exception layers.

A profile of single-row predictions showed about 30 % of the time spent between Starlette's
ExceptionMiddleware and the endpoint (routing, dependency solving, wrappers). This middleware
sits first and sends the four prediction routes straight to the same route functions, with
errors mapped by the same responder; everything else (and the OpenAPI document, which still
describes these routes) goes through FastAPI as usual.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.routes_predict import infer_v2, predict_v1

Handler = Callable[[Request, str, "str | None"], Awaitable[Response]]
_ROUTE = re.compile(r"^/(v1|v2)/models/([^/]+)(?:/versions/([^/]+))?/(predict|infer)$")
_HANDLERS: dict[tuple[str, str], Handler] = {
    ("v1", "predict"): predict_v1,
    ("v2", "infer"): infer_v2,
}


class FastPathMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _ROUTE.match(scope["path"])
            handler = _HANDLERS.get((m[1], m[4])) if m else None
            if m and handler:
                model, version = m[2], m[3]
                scope["path_params"] = (
                    {"model": model, "version": version} if version else {"model": model}
                )
                request = Request(scope, receive, send)
                try:
                    response = await handler(request, model, version)
                except Exception as exc:
                    response = await scope["app"].state.error_responder(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
