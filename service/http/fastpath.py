"""Prediction requests skip the framework's layers.

A profile of single-row predictions showed about 30 % of the time spent between Starlette's
ExceptionMiddleware and the endpoint (routing, dependency solving, wrappers), and a further ~5 %
in FastAPI's outer middleware (its telemetry check reads the environment on every request).
``VigilApp`` answers the four prediction routes itself, before any of those layers, with the
same route functions and the same error responder; everything else (and the OpenAPI document,
which still describes these routes) goes through FastAPI as usual.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.http.routes_predict import infer_v2, predict_v1

Handler = Callable[[Request, str, "str | None"], Awaitable[Response]]
_ROUTE = re.compile(r"^/(v1|v2)/models/([^/]+)(?:/versions/([^/]+))?/(predict|infer)$")
_HANDLERS: dict[tuple[str, str], Handler] = {
    ("v1", "predict"): predict_v1,
    ("v2", "infer"): infer_v2,
}


class VigilApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _ROUTE.match(scope["path"])
            handler = _HANDLERS.get((m[1], m[4])) if m else None
            if m is not None and handler is not None:
                await self._serve(handler, m[2], m[3], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(
        self, handler: Handler, model: str, version: str | None,
        scope: Scope, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        scope["app"] = self
        scope["path_params"] = {"model": model, "version": version} if version else {"model": model}
        request = Request(scope, receive, send)
        try:
            response = await handler(request, model, version)
        except Exception as exc:
            response = await self.state.error_responder(request, exc)
        await response(scope, receive, send)
