"""The floor: an ASGI app that does no work, served by the same uvicorn as Vigil.

It reads the request body and answers a fixed JSON body the size of Vigil's single-row V1
answer: no routing, no parsing, no model, no log, no metrics, no background task. Whatever
latency it shows at one connection is the machine's and the HTTP server's, not the app's;
``rollout_bench --connections 1`` runs it beside Vigil so that Vigil's tail can be read against
it. ``python -m uvicorn loadtests.floor_app:app --port 8002``
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

BODY = (
    b'{"model":"breast-cancer","version":1,"request_id":"floor-0000000000000000",'
    b'"predictions":[{"label":"malignant","probabilities":'
    b'{"malignant":0.9912345678901234,"benign":0.008765432109876543}}]}'
)
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
}
REPLY: Message = {"type": "http.response.body", "body": BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(START)
    await send(REPLY)
