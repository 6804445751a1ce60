"""Bearer tokens: the one check that the admin API, feedback and the console share."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from service.errors import Unauthorized


def check_bearer(request: Request, token: str, what: str, setting: str) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized(f"{what}: send Authorization: Bearer <{setting}>")
    check_token(given, token, what)


def check_token(given: str, token: str, what: str) -> None:
    """Raise 401 unless ``given`` is ``token``; compared in constant time, so the response time
    does not tell how much of a guess was right."""
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized(f"{what}: wrong token")
