"""Reading request bodies within limits: size, content type, content encoding, JSON syntax."""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

BODY_STATE = "vigil_body"
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


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise BadRequest("body: empty; expected a JSON object")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: malformed JSON ({exc})") from None
    if (
        len(raw) <= DUPLICATE_CHECK_MAX_BYTES
        and isinstance(parsed, dict | list)
        and _key_occurrences(raw) != _count_keys(parsed)
    ):
        _refuse_duplicate_keys(raw)
    return parsed


# Every key in the text is a string followed by optional blanks and a colon, so this counts at
# least every key occurrence (more when a string value contains `":`). If it equals the number
# of keys orjson kept, no object lost a duplicate and the slow second parse is not needed.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')
_BLANK_BEFORE_COLON = re.compile(rb'"[ \t\r\n]+:')


def _key_occurrences(raw: bytes) -> int:
    if _BLANK_BEFORE_COLON.search(raw):  # rare: pretty-printed bodies
        return len(_KEY_END.findall(raw))
    return raw.count(b'":')


MAX_DEPTH = 64  # no Vigil request nests deeper than 4; orjson alone would accept 1024


def _count_keys(node: Any, depth: int = 1) -> int:
    if depth > MAX_DEPTH:
        raise BadRequest(f"body: JSON nested too deeply (more than {MAX_DEPTH} levels)")
    if type(node) is dict:
        return len(node) + sum(
            _count_keys(v, depth + 1) for v in node.values() if type(v) in _CONTAINERS
        )
    if type(node) is list:
        return sum(_count_keys(v, depth + 1) for v in node if type(v) in _CONTAINERS)
    return 0


_CONTAINERS = (dict, list)


# orjson keeps the last of duplicated keys silently, so a second, stdlib parse finds them. It
# costs ~6x orjson's parse; bodies above this size (≈ 80 V1 rows) skip it: the last key wins.
DUPLICATE_CHECK_MAX_BYTES = 64 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"body: duplicate key {key[:64]!r} in a JSON object")
            seen.add(key)
    return obj


def _refuse_duplicate_keys(raw: bytes) -> None:
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        # orjson accepts 1024 levels, the stdlib scanner fewer: either way, too deep to be sane.
        raise BadRequest("body: JSON nested too deeply") from None
    except ValueError:
        pass  # orjson accepted it; only duplicate keys are the stdlib parser's business here


async def receive_json(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> Any:
    media = _media_type(headers)
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: {media!r} is not accepted; send application/json"
        )
    return parse_json(await receive_body(headers, receive, state, max_bytes))


async def receive_v2(
    headers: RawHeaders, receive: Receive, state: dict[str, Any], max_bytes: int
) -> tuple[Any, bytes]:
    """A V2 body: JSON alone, or JSON header + binary tensors (binary data extension)."""
    header_len = header(headers, b"inference-header-content-length")
    media = _media_type(headers)
    if header_len is None and media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: {media!r} is not accepted; send application/json, or binary tensors "
            "with Inference-Header-Content-Length"
        )
    from service.codec_v2 import split_binary

    head, binary = split_binary(await receive_body(headers, receive, state, max_bytes), header_len)
    return parse_json(head), binary


async def read_json(request: Request, max_bytes: int) -> Any:
    state = request.scope.setdefault("state", {})
    return await receive_json(raw_headers(request.scope), request.receive, state, max_bytes)


def body_excerpt(request: Request, limit: int = 2048) -> str:
    raw: bytes = getattr(request.state, BODY_STATE, b"")
    return raw[:limit].decode("utf-8", errors="replace")
