"""The data plane's cost per request with no rollout, a shadow and a canary, without HTTP.

``python -m loadtests.rollout_core_bench [--model NAME] [--variants none,shadow,canary]``: 32
concurrent single-row V1 predictions at a time through ``DataPlane.predict_v1`` with the spool on,
in one process, best of 5 rounds of 2,048 requests per variant, twice interleaved. Steadier than
wrk on a shared machine: it measures what a rollout adds to the serving core, not the HTTP
server. ``--model`` picks a demo model (default breast-cancer; ``diabetes-mixed`` measures the
string path: typed decoding of strings, one ONNX input per column, strings in the log).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from model_store.demo import DEMO_MODEL, DEMO_NAMES, demo_frame, train_demo_model
from model_store.rollout import Mode, Rollouts
from model_store.store import ModelStore
from service.core.dataplane import DataPlane
from service.core.loaded_model import session_options
from service.core.registry import ModelRegistry
from service.iolog.spool import SpoolIOLog
from service.metrics import Metrics
from service.settings import Settings

VARIANTS = ("none", "shadow", "canary")


async def _per_request_us(template: Path, variant: str, body: bytes, model: str) -> float:
    home = Path(tempfile.mkdtemp(prefix="vigil-core-bench-"))
    try:
        shutil.copytree(template, home / "models")
        settings = Settings(model_store=home / "models", data_dir=home / "data")
        store = ModelStore(settings.model_store)
        if variant == "shadow":
            Rollouts(store).start(model, 2, Mode.SHADOW, sample=1.0)
        elif variant == "canary":
            Rollouts(store).start(model, 2, Mode.CANARY, percent=10)
        metrics = Metrics()
        registry = ModelRegistry(store, session_options(1, 1))
        registry.refresh()
        iolog = SpoolIOLog(settings, metrics)
        await iolog.start()
        plane = DataPlane(registry, iolog, metrics, max_rows=1000)

        async def one() -> None:
            await plane.predict_v1(model, None, body, None, time.perf_counter())

        for _ in range(2000):  # warm up
            await one()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(64):
                await asyncio.gather(*(one() for _ in range(32)))
            best = min(best, (time.perf_counter() - start) / (64 * 32))
        await iolog.stop()
        registry.close()
        return best * 1e6
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=DEMO_NAMES, default=DEMO_MODEL)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v in VARIANTS]
    with tempfile.TemporaryDirectory(prefix="vigil-core-bench-") as tmp:
        template = Path(tmp) / "models"
        store = ModelStore(template)
        train_demo_model(store, args.model)
        train_demo_model(store, args.model, c=0.01, promote=False)
        body = orjson.dumps({"instances": demo_frame(args.model)[0].iloc[:1].to_dict("records")})
        results: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(2):
            for variant in variants:
                us = asyncio.run(_per_request_us(template, variant, body, args.model))
                results[variant].append(us)
    base = min(results[variants[0]])
    print(f"model {args.model}")
    for variant in variants:
        us = min(results[variant])
        print(f"{variant:>7}: {us:6.1f} us/request (+{us - base:4.1f} us)  runs {results[variant]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
