"""Latencies bucketed by wall-clock window, so that a long run can show p99 over time."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson


class Timeline:
    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.started = time.monotonic()
        self._ms: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self._failures: dict[int, int] = defaultdict(int)

    def restart(self) -> None:
        self.started = time.monotonic()
        self._ms.clear()
        self._failures.clear()

    def add(self, name: str, ms: float, *, failed: bool) -> None:
        window = int((time.monotonic() - self.started) // self.window_s)
        self._ms[window][name].append(ms)
        if failed:
            self._failures[window] += 1

    def windows(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for window in sorted(self._ms):
            by_name = self._ms[window]
            every = np.concatenate([np.asarray(v) for v in by_name.values()])
            single = np.asarray(by_name.get("v1 predict 1 row", []))
            out.append(
                {
                    "start_s": window * self.window_s,
                    "requests": int(every.size),
                    "failures": self._failures.get(window, 0),
                    "p50_ms": float(np.percentile(every, 50)),
                    "p99_ms": float(np.percentile(every, 99)),
                    "p99_single_row_ms": float(np.percentile(single, 99)) if single.size else None,
                }
            )
        return out

    def write(self, path: str | Path, **extra: object) -> None:
        doc = {"window_s": self.window_s, "windows": self.windows(), **extra}
        Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
