"""Prediction requests skip the framework's layers.

A profile of single-row predictions showed about 30 % of the time spent between Starlette's
ExceptionMiddleware and the endpoint (routing, dependency solving, wrappers), and a further ~5 %
in FastAPI's outer middleware (its telemetry check reads the environment on every request).
``VigilApp`` answers the four prediction routes itself, before any of those layers, with the
same handlers and the same error responder; everything else (and the OpenAPI document, which
still describes these routes) goes through FastAPI as usual.

On success no Starlette object is built at all: the handlers read the raw ASGI headers and
body, and the reply goes out as two ASGI messages (Request/Response objects, their header
parsing and their ``__call__`` were another ~10 % of a single-row prediction). Only an error
builds a ``Request``, for the error responder.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from service.errors import NotFound
from service.http.deps import Runtime
from service.http.routes_predict import Reply, infer_v2, predict_v1

Handler = Callable[[Runtime, Scope, Receive, str, "str | None"], Awaitable[Reply]]
# fullmatch: with "$", a path ending in a newline ("…/predict%0A") would be served as predict.
_ROUTE = re.compile(r"/(v1|v2)/models/([^/]+)(?:/versions/([^/]+))?/(predict|infer)")
_HANDLERS: dict[tuple[str, str], Handler] = {
    ("v1", "predict"): predict_v1,
    ("v2", "infer"): infer_v2,
}


class VigilApp(FastAPI):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].isprintable():
            # Starlette matches routes with "$", which also matches before a final newline:
            # "/v1/models/m/predict%0A" would be served. No route of ours has a control char.
            refused = NotFound(f"no such path: {scope['path']!r} contains a control character")
            await self._error(refused, {}, scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            m = _ROUTE.fullmatch(scope["path"])
            handler = _HANDLERS.get((m[1], m[4])) if m else None
            if m is not None and handler is not None:
                await self._serve(handler, m[2], m[3], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(
        self, handler: Handler, model: str, version: str | None,
        scope: Scope, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        try:
            reply = await handler(self.state.runtime, scope, receive, model, version)
        except Exception as exc:
            params = {"model": model, "version": version} if version else {"model": model}
            await self._error(exc, params, scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": reply.headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _error(
        self, exc: Exception, path_params: dict[str, str],
        scope: Scope, receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        scope["app"] = self
        scope["path_params"] = path_params
        request = Request(scope, receive, send)
        response = await self.state.error_responder(request, exc)
        await response(scope, receive, send)
