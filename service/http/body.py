"""Reading request bodies within limits: size, content type, content encoding, JSON syntax."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope

from service.core.codec_v2 import split_binary
from service.core.jsonparse import parse_json
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

BODY_STATE = "vigil_body"
# Bytes of a refused body still to come: -1 when unknown (chunked), absent when none.
UNREAD_STATE = "vigil_body_unread"
_JSON_TYPES = frozenset({"application/json", ""})
RawHeaders = dict[bytes, bytes]  # ASGI header names are lower-case bytes


def raw_headers(scope: Scope) -> RawHeaders:
    return dict(scope["headers"])


def header(headers: RawHeaders, name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _media_type(headers: RawHeaders) -> str:
    value = headers.get(b"content-type", b"").decode("latin-1")
    return value.split(";", 1)[0].strip().lower()


async def receive_body(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> bytes:
    """The whole body within ``max_bytes`` (decompressed if gzip), kept in ``state`` for the
    error path's log excerpt."""
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length: not a number")
        if int(declared) > max_bytes:
            state[UNREAD_STATE] = int(declared)
            raise PayloadTooLarge(
                f"body: {declared.decode()} bytes exceed the limit of {max_bytes}"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("body: the client closed the connection before sending it all")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            if message.get("more_body", False):
                state[UNREAD_STATE] = int(declared) - size if declared is not None else -1
            raise PayloadTooLarge(f"body: more than {max_bytes} bytes (the limit)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    elif encoding not in ("identity", ""):
        raise UnsupportedMediaType(f"Content-Encoding: {encoding!r} is not supported; use gzip")
    state[BODY_STATE] = body
    return body


async def discard_unread(
    receive: Receive, state: dict[str, Any], max_bytes: int, max_seconds: float
) -> bool:
    """Read and drop the rest of a refused body, as nginx's lingering close does; True if it
    was read to its end.

    Clients such as urllib send the whole body before they read the answer, and ask for the
    connection to be closed after it: closing it with the body half-read makes the kernel reset
    it, and they see ``Connection reset by peer`` instead of the 413. Reading on costs the
    bandwidth of the rest of the body, so only up to ``max_bytes`` and ``max_seconds``; past
    them the connection is closed as before.
    """
    unread = state.pop(UNREAD_STATE, None)
    if unread is None:
        return True
    if unread > max_bytes:
        return False  # declared too large to be worth reading: close at once
    read = 0
    try:
        async with asyncio.timeout(max_seconds):
            while read <= max_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    except TimeoutError:
        pass
    return False


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(
            f"body: Content-Encoding says gzip but the body is not gzip ({exc})"
        ) from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"body: more than {max_bytes} bytes once decompressed (the limit)")
    if not inflater.eof:
        raise BadRequest("body: truncated gzip stream")
    return out


async def receive_json_bytes(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> bytes:
    """A body that must be JSON, not yet parsed (the V1 codec parses it for its model)."""
    media = _media_type(headers)
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: {media!r} is not accepted; send application/json"
        )
    return await receive_body(headers, receive, state, max_bytes)


async def receive_json(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> Any:
    return parse_json(await receive_json_bytes(headers, receive, state, max_bytes))


async def receive_v2(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> tuple[bytes, bytes]:
    """A V2 body: JSON alone, or JSON header + binary tensors (binary data extension); the
    JSON is not parsed yet (the V2 codec parses it for its model)."""
    header_len = header(headers, b"inference-header-content-length")
    media = _media_type(headers)
    if header_len is None and media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: {media!r} is not accepted; send application/json, or binary tensors "
            "with Inference-Header-Content-Length"
        )
    return split_binary(await receive_body(headers, receive, state, max_bytes), header_len)


async def read_json(request: Request, max_bytes: int) -> Any:
    state = request.scope.setdefault("state", {})
    return await receive_json(raw_headers(request.scope), request.receive, state, max_bytes)


def request_body(request: Request) -> bytes:
    """The body as received, for the rejected log (which decides what of it to keep)."""
    raw: bytes = getattr(request.state, BODY_STATE, b"")
    return raw
