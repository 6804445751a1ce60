"""A/B of the serving core between two checkouts, in CPU time per request, without HTTP.

``python -m loadtests.ab_core_bench --a /work/main --b . [--rounds 6] [--model breast-cancer]``

Each round runs one fresh process per checkout (alternating A, B, A, B, …, so that a noisy
neighbour hits both alike); each process trains the demo model with its own code, then sends
32 concurrent single-row V1 predictions at a time through ``DataPlane.predict_v1`` with the spool
on (as ``rollout_core_bench``), and reports the CPU time of the whole process (every thread: the
spool's writer too) and the wall time per request, best of 5 bursts of 2,048 requests. CPU time
is what a shared machine disturbs least. ``--model`` other than breast-cancer needs checkouts that
have it (``model_store.demo.train_demo_model``); ``--b-only`` measures just B (a figure, no A/B).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_WORKER = r"""
import asyncio, json, shutil, sys, tempfile, time
from pathlib import Path
import orjson
from model_store.store import ModelStore
from service.core.dataplane import DataPlane
from service.core.loaded_model import session_options
from service.core.registry import ModelRegistry
from service.iolog.spool import SpoolIOLog
from service.metrics import Metrics
from service.settings import Settings

model = sys.argv[1]
home = Path(tempfile.mkdtemp(prefix="vigil-ab-"))
store = ModelStore(home / "models")
if model == "breast-cancer":
    from model_store.demo import demo_data, train_demo
    train_demo(store)
    row = demo_data()[0].iloc[:1]
else:
    from model_store.demo import demo_frame, train_demo_model
    train_demo_model(store, model)
    row = demo_frame(model)[0].iloc[:1]
body = orjson.dumps({"instances": row.to_dict("records")})


async def run():
    settings = Settings(model_store=home / "models", data_dir=home / "data")
    metrics = Metrics()
    registry = ModelRegistry(store, session_options(1, 1))
    registry.refresh()
    iolog = SpoolIOLog(settings, metrics)
    await iolog.start()
    plane = DataPlane(registry, iolog, metrics, max_rows=1000)

    async def one():
        await plane.predict_v1(model, None, body, None, time.perf_counter())

    for _ in range(2000):
        await one()
    best_cpu = best_wall = float("inf")
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(64):
            await asyncio.gather(*(one() for _ in range(32)))
        n = 64 * 32
        best_cpu = min(best_cpu, (time.process_time() - cpu) / n)
        best_wall = min(best_wall, (time.perf_counter() - wall) / n)
    await iolog.stop()
    registry.close()
    print(json.dumps({"cpu_us": best_cpu * 1e6, "wall_us": best_wall * 1e6}))


try:
    asyncio.run(run())
finally:
    shutil.rmtree(home, ignore_errors=True)
"""


def _measure(tree: Path, model: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, model],
        cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=Path("/work/main"))
    parser.add_argument("--b", type=Path, default=Path.cwd())
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--model", default="breast-cancer")
    parser.add_argument("--b-only", action="store_true")
    args = parser.parse_args()
    sides = (
        {"B": args.b.resolve()} if args.b_only else {"A": args.a.resolve(), "B": args.b.resolve()}
    )
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
    for i in range(args.rounds):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for key in order:
            runs[key].append(_measure(sides[key], args.model))
    print(f"model {args.model}, {args.rounds} rounds; µs per single-row V1 request")
    for key, tree in sides.items():
        cpu = [r["cpu_us"] for r in runs[key]]
        wall = [r["wall_us"] for r in runs[key]]
        print(
            f"{key} {tree}: CPU min {min(cpu):.1f} median {statistics.median(cpu):.1f}; "
            f"wall min {min(wall):.1f} median {statistics.median(wall):.1f}"
        )
    if not args.b_only:
        a = statistics.median(r["cpu_us"] for r in runs["A"])
        b = statistics.median(r["cpu_us"] for r in runs["B"])
        print(f"B/A CPU (median): {b / a:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
