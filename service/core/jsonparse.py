"""Parsing JSON request bodies: orjson, plus the checks it does not make (duplicate keys, depth).

Core code (the codecs) and the HTTP layer both parse through here; nothing here knows HTTP.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from service.errors import BadRequest


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise BadRequest("body: empty; expected a JSON object")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        _refuse_non_finite(raw)
        raise BadRequest(f"body: malformed JSON ({exc})") from None
    if len(raw) <= DUPLICATE_CHECK_MAX_BYTES and isinstance(parsed, dict | list):
        check_duplicate_keys(raw, _count_keys(parsed))
    return parsed


def _refuse_non_finite(raw: bytes) -> None:
    """Name the field of a NaN, Infinity or overflowing number (JSON has none; Python's json
    writes them): the stdlib parser accepts them, so where it succeeds they were the problem."""
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return
    where = _non_finite_path(parsed, "", 1)
    if where is not None:
        path, value = where
        what = "NaN" if math.isnan(value) else "infinity" if value > 0 else "-infinity"
        raise BadRequest(
            f"body: malformed JSON: {path or 'the body'} is {what}, which JSON cannot hold "
            "(numbers too large for a double read as infinity); send a finite number"
        )


def _non_finite_path(node: Any, path: str, depth: int) -> tuple[str, float] | None:
    if type(node) is float and not math.isfinite(node):
        return path, node
    if depth > MAX_DEPTH:
        return None
    items: Any = (
        ((f".{k}" if path else str(k), v) for k, v in node.items())
        if type(node) is dict
        else ((f"{path}[{i}]", v) for i, v in enumerate(node))
        if type(node) is list
        else ()
    )
    for key, value in items:
        found = _non_finite_path(value, key if type(node) is list else f"{path}{key}", depth + 1)
        if found is not None:
            return found
    return None


def check_duplicate_keys(raw: bytes, kept: int) -> None:
    """For a body a decoder parsed (orjson here, or a typed decoder), keeping ``kept`` keys in
    all: refuse it if one of its objects repeated a key (decoders keep the last one silently)."""
    if len(raw) <= DUPLICATE_CHECK_MAX_BYTES and _key_occurrences(raw) != kept:
        _refuse_duplicate_keys(raw)


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
