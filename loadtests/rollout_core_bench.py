"""The data plane's cost per request with no rollout, a shadow and a canary, without HTTP.

``python -m loadtests.rollout_core_bench [--rounds 20] [--concurrency 32] [--model NAME]
[--variants none,shadow,canary]``: single-row V1
predictions through ``DataPlane.predict_v1`` with the spool on, ``--concurrency`` at a time, in
one process. The three variants run side by side, one round of 1,024 requests each in turn, and
each keeps its best round, in CPU time (the process's, all its threads), so that other work on a
shared machine counts as little as possible. Steadier than wrk: it measures what a rollout adds
to the serving core, not the HTTP server. ``--model`` picks a demo model (default breast-cancer;
``diabetes-mixed`` measures the string path: strings decoded by type, one ONNX input per column,
strings in the log). To compare two checkouts, ``loadtests.ab_core_bench`` runs it on each,
alternately.
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
ROUND = 1024


async def _plane(
    template: Path, home: Path, variant: str, model: str
) -> tuple[DataPlane, SpoolIOLog]:
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
    return DataPlane(registry, iolog, metrics, max_rows=1000), iolog


async def _best_us(
    root: Path, rounds: int, concurrency: int, model: str, variants: list[str]
) -> dict[str, float]:
    template = root / "template"
    store = ModelStore(template)
    train_demo_model(store, model)
    if variants != ["none"]:  # a candidate for the rollouts
        train_demo_model(store, model, c=0.01, promote=False)
    planes = {v: await _plane(template, root / v, v, model) for v in variants}
    body = orjson.dumps({"instances": demo_frame(model)[0].iloc[:1].to_dict("records")})
    batches = max(1, ROUND // concurrency)

    async def run(plane: DataPlane) -> None:
        for _ in range(batches):
            await asyncio.gather(
                *(
                    plane.predict_v1(model, None, body, None, time.perf_counter())
                    for _ in range(concurrency)
                )
            )

    for plane, _ in planes.values():  # warm up
        await run(plane)
        await run(plane)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for variant, (plane, _) in planes.items():
            start = time.process_time()
            await run(plane)
            spent = (time.process_time() - start) / (batches * concurrency)
            best[variant] = min(best[variant], spent * 1e6)
    for plane, iolog in planes.values():
        await iolog.stop()
        plane.registry.close()
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--model", choices=DEMO_NAMES, default=DEMO_MODEL)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, none first")
    args = p.parse_args(argv)
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    with tempfile.TemporaryDirectory(prefix="vigil-core-bench-") as tmp:
        best = asyncio.run(_best_us(Path(tmp), args.rounds, args.concurrency, args.model, variants))
    base = best[variants[0]]
    print(f"model {args.model}")
    for variant in variants:
        us = best[variant]
        print(f"{variant:>7}: {us:6.1f} us/request (+{us - base:4.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
