"""The data plane's cost per request with no rollout, a shadow and a canary, without HTTP.

``python -m loadtests.rollout_core_bench``: 32 concurrent single-row V1 predictions at a time
through ``DataPlane.predict_v1`` with the spool on, in one process, best of 5 rounds of 2,048
requests per variant, twice interleaved, in CPU time (the process's, all its threads), so that
other work on a shared machine does not count. Steadier than wrk: it measures what a rollout adds
to the serving core, not the HTTP server.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from loadtests import payloads
from model_store.demo import DEMO_MODEL, train_demo
from model_store.rollout import Mode, Rollouts
from model_store.store import ModelStore
from service.core.dataplane import DataPlane
from service.core.loaded_model import session_options
from service.core.registry import ModelRegistry
from service.iolog.spool import SpoolIOLog
from service.metrics import Metrics
from service.settings import Settings

VARIANTS = ("none", "shadow", "canary")


async def _per_request_us(template: Path, variant: str, body: bytes) -> float:
    home = Path(tempfile.mkdtemp(prefix="vigil-core-bench-"))
    try:
        shutil.copytree(template, home / "models")
        settings = Settings(model_store=home / "models", data_dir=home / "data")
        store = ModelStore(settings.model_store)
        if variant == "shadow":
            Rollouts(store).start(DEMO_MODEL, 2, Mode.SHADOW, sample=1.0)
        elif variant == "canary":
            Rollouts(store).start(DEMO_MODEL, 2, Mode.CANARY, percent=10)
        metrics = Metrics()
        registry = ModelRegistry(store, session_options(1, 1))
        registry.refresh()
        iolog = SpoolIOLog(settings, metrics)
        await iolog.start()
        plane = DataPlane(registry, iolog, metrics, max_rows=1000)

        async def one() -> None:
            await plane.predict_v1(DEMO_MODEL, None, body, None, time.perf_counter())

        for _ in range(2000):  # warm up
            await one()
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(64):
                await asyncio.gather(*(one() for _ in range(32)))
            best = min(best, (time.process_time() - start) / (64 * 32))
        await iolog.stop()
        registry.close()
        return best * 1e6
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vigil-core-bench-") as tmp:
        template = Path(tmp) / "models"
        store = ModelStore(template)
        train_demo(store)
        train_demo(store, c=0.01, promote=False)
        body = payloads.v1_body([0])
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(2):
            for variant in VARIANTS:
                results[variant].append(asyncio.run(_per_request_us(template, variant, body)))
    base = min(results["none"])
    for variant in VARIANTS:
        us = min(results[variant])
        print(f"{variant:>7}: {us:6.1f} us/request (+{us - base:4.1f} us)  runs {results[variant]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
