"""Who may act on a model's rollout by itself: a lease in the store, held by one replica.

``<store>/<model>/rollout.lease`` holds ``{"holder": ..., "expires_at": unix seconds}``. A replica
takes or renews it under the model lock; it is someone else's until it expires, so at most one
replica's automatic loop acts on a rollout at a time, and a dead holder is replaced within the
lease's time to live.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from model_store.store import ModelStore

LEASE_FILE = "rollout.lease"


def new_holder() -> str:
    """This process's name as a lease holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def acquire(
    store: ModelStore, model: str, holder: str, ttl_s: float, now: float | None = None
) -> bool:
    """Take or renew the lease for ``ttl_s`` seconds; False while another holder's is valid."""
    path = store.root / model / LEASE_FILE
    with store.lock(model):
        now = time.time() if now is None else now
        current = _read(path)
        if current is not None and current.get("holder") != holder:
            expires = current.get("expires_at")
            if isinstance(expires, int | float) and expires > now:
                return False
        tmp = path.with_name(f".{LEASE_FILE}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"holder": holder, "expires_at": now + ttl_s}))
        os.replace(tmp, path)
    return True


def release(store: ModelStore, model: str, holder: str) -> None:
    """Give the lease up if ``holder`` has it (at shutdown: the next replica need not wait)."""
    path = store.root / model / LEASE_FILE
    with store.lock(model):
        current = _read(path)
        if current is not None and current.get("holder") == holder:
            path.unlink(missing_ok=True)
