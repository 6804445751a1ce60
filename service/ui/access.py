"""Who may see the console: the access mode, the session cookie and the CSRF token.

With ``VIGIL_ADMIN_TOKEN`` set, a login with the token issues a session cookie signed with it
(so changing the token ends every session). Without a token the console is open only to a
server bound to loopback in development. Forms carry a CSRF token: an HMAC of a random cookie
(``SameSite=Strict``, ``HttpOnly``) keyed with the admin token, so a page elsewhere can neither
read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from service.settings import Environment, Settings

SESSION_COOKIE = "vigil_ui_session"
CSRF_COOKIE = "vigil_ui_csrf"
SESSION_MAX_AGE_S = 12 * 3600
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_LOCAL_KEY = "vigil-console-local"  # no secret exists then; the cookie itself is the secret


class Mode(StrEnum):
    TOKEN = "token"  # noqa: S105 (a mode, not a secret): login with the admin token
    LOCAL = "local"  # no token: loopback in development only
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Access:
    mode: Mode
    reason: str = ""
    key: str = _LOCAL_KEY

    @property
    def needs_login(self) -> bool:
        return self.mode is Mode.TOKEN


def access(settings: Settings) -> Access:
    """The console's mode for these settings, and why it is off when it is."""
    if not settings.ui_enabled:
        return Access(Mode.OFF, "The console is turned off (VIGIL_UI_ENABLED=false).")
    token = settings.admin_token.get_secret_value()
    if token:
        return Access(Mode.TOKEN, key=token)
    if settings.environment is Environment.PRODUCTION:
        return Access(
            Mode.OFF,
            "The console is off: in production it needs VIGIL_ADMIN_TOKEN, because the I/O log "
            "it shows can hold personal data. Set the token to enable it.",
        )
    if settings.host not in LOOPBACK:
        return Access(
            Mode.OFF,
            f"The console is off: without VIGIL_ADMIN_TOKEN it is served only on 127.0.0.1, "
            f"and this server is bound to {settings.host}. Set the token to enable it.",
        )
    return Access(Mode.LOCAL)


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_session(key: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    body = f"{issued}.{secrets.token_hex(16)}"
    return f"{body}.{_sign(key, 'session|' + body)}"


def session_valid(key: str, cookie: str | None, now: float | None = None) -> bool:
    if not cookie or cookie.count(".") != 2:
        return False
    body, _, signature = cookie.rpartition(".")
    if not hmac.compare_digest(signature, _sign(key, "session|" + body)):
        return False
    issued = body.split(".", 1)[0]
    age = (time.time() if now is None else now) - int(issued) if issued.isdigit() else -1
    return 0 <= age < SESSION_MAX_AGE_S


def new_csrf_cookie() -> str:
    return secrets.token_hex(16)


def csrf_token(key: str, cookie: str) -> str:
    return _sign(key, "csrf|" + cookie)


def csrf_valid(key: str, cookie: str | None, given: str | None) -> bool:
    if not cookie or not given:
        return False
    return hmac.compare_digest(given, csrf_token(key, cookie))
