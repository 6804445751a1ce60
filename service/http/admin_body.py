"""Typed admin request bodies: unknown fields and wrong types are a 422 naming the field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from service.errors import BadRequest, InvalidInput
from service.http.body import raw_headers, receive_json_bytes

B = TypeVar("B", bound=BaseModel)
# Every schema-valid admin body fits: the longest is a 2000-character reason written as JSON
# escapes of astral characters (12 bytes each, "\\ud83d\\ude00"), ~24 KB. A longer body is
# therefore always schema-invalid, and the 413 never hides the 422 that names the field.
REASON_CHARS = 2000
ADMIN_BODY_BYTES = 64 * 1024


class AdminBody(BaseModel):
    # strict: JSON `"10"` is not a percent and `true` is not a version
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ReasonBody(AdminBody):
    reason: str | None = Field(None, max_length=REASON_CHARS, description="Why, for the history.")


class PromoteBody(ReasonBody):
    version: int = Field(ge=1, description="The version the alias should name.")


async def read_body(request: Request, cls: type[B], max_bytes: int = ADMIN_BODY_BYTES) -> B:
    """``cls`` from the JSON body; an empty body is ``{}`` (every field optional)."""
    state = request.scope.setdefault("state", {})
    raw = await receive_json_bytes(raw_headers(request.scope), request.receive, state, max_bytes)
    try:
        return cls.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        raise _error(exc) from None


def openapi_body(cls: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``cls`` as the request body (routes read bodies by hand)."""
    schema = cls.model_json_schema()
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": bool(schema.get("required")),
            "content": {"application/json": {"schema": _inline(schema, defs)}},
        }
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every ``#/$defs/…`` reference replaced by its definition."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _error(exc: ValidationError) -> BadRequest | InvalidInput:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return BadRequest(f"body: not valid JSON ({first['msg']})")
    if first["type"] == "model_type":
        return InvalidInput("body: expected a JSON object")
    where = ".".join(str(p) for p in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return InvalidInput(f"{where}: {message}")
