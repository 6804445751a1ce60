"""The one duration grammar of Vigil's command line (``--every``, ``--older-than``, retention)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``1h30m``, ``2d``, ``1w``; a bare number means seconds.

    Raises ``ValueError`` naming the grammar. Zero is refused unless ``allow_zero`` (``--older-than
    0s`` means "everything so far"; an interval of zero would spin).
    """
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    elif value and _PART.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    else:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h30m, 2d or 1w")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"duration {text!r} must be positive")
    return timedelta(seconds=seconds)
