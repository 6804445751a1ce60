"""A per-model lock file, held around every read-modify-write of aliases, rollout and history.

``fcntl.flock`` locks belong to an open file description, so two threads of one process (each
opening the file) exclude each other just like two processes do; the lock dies with its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from model_store.errors import StoreReadOnlyError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    """Hold the model's exclusive lock; not re-entrant, so never nest it in one thread."""
    try:
        fd = os.open(model_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        # Without the lock no change could be written either: refuse before touching anything.
        raise StoreReadOnlyError(
            f"cannot change {model_dir.name}: the model store is not writable here "
            f"({exc.strerror or exc}); change it with `vigil` where it is"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
