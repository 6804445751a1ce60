"""What a rollout costs: ``python -m loadtests.rollout_bench [--duration 10] [--repeat 3]``.

Single-row V1 predictions against Vigil as shipped with no rollout, with a shadow of every
request (sample 1.0) and with a 10 % canary, in the same run and interleaved (one server at a
time, pinned to one CPU; wrk on the other), medians over ``--repeat`` rounds. Targets: shadow
costs at most 15 % of throughput with p99 at most 10 ms at 32 connections; a canary at most 3 %.
Also the serving process's CPU time per request (the deliverer process not counted): on a shared
machine, where wrk's req/s depend on what else runs, its ratio to no rollout is the steadier
estimate of the throughput ratio. With ``--connections 1``: the p99 at most 3x the p50, with and
without a rollout (background work of the server, such as the I/O log's delivery, must not land
on request latency at low load). That run also serves the floor, an ASGI app that does no work
(loadtests/floor_app.py) on the same uvicorn, interleaved with the rest: its tail is the
machine's, and each variant's p99 is shown against the floor's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from loadtests import payloads
from loadtests.servers import start_floor, start_vigil, train_template
from loadtests.wrk import run_wrk
from model_store.demo import DEMO_MODEL
from model_store.rollout import Mode, Rollouts
from model_store.store import ModelStore

console = Console(width=None if sys.stdout.isatty() else 150)
VARIANTS = ("none", "shadow", "canary")
FLOOR = "floor"  # the no-work app, run beside the variants at one connection
TARGETS = {"shadow": 0.85, "canary": 0.97}  # throughput kept, relative to no rollout
P99_TARGET_MS = 10.0
TAIL_TARGET = 3.0  # p99 / p50 at one connection


def _stores(template: Path, root: Path) -> dict[str, Path]:
    out = {}
    for variant in VARIANTS:
        store_dir = root / variant / "models"
        shutil.copytree(template, store_dir)
        rollouts = Rollouts(ModelStore(store_dir))
        if variant == "shadow":
            rollouts.start(DEMO_MODEL, 2, Mode.SHADOW, sample=1.0)
        elif variant == "canary":
            rollouts.start(DEMO_MODEL, 2, Mode.CANARY, percent=10)
        out[variant] = store_dir
    return out


def _measure(
    args: argparse.Namespace, store: Path | None, workdir: Path, body: Path
) -> dict[str, Any]:
    if store is None:
        server = start_floor(workdir.name, workdir.parent, cpu=args.server_cpu)
    else:
        server = start_vigil(workdir.name, store, workdir.parent, {}, cpu=args.server_cpu)
    try:
        opts = {"connections": args.connections, "threads": 1, "cpu": args.wrk_cpu}
        run_wrk(server.url + payloads.V1_PATH, body, duration_s=args.warmup, **opts)
        worker = psutil.Process(server.proc.pid)
        before = worker.cpu_times()
        r = run_wrk(server.url + payloads.V1_PATH, body, duration_s=args.duration, **opts)
        after = worker.cpu_times()
    finally:
        server.stop()
    cpu_s = after.user + after.system - before.user - before.system
    cpu_us = cpu_s / r.requests * 1e6 if r.requests else 0.0
    return {
        "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_us": cpu_us,
        "errors": r.errors + r.non_2xx,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--wrk-cpu", default="1")
    args = p.parse_args(argv)
    order = (*VARIANTS, FLOOR) if args.connections == 1 else VARIANTS
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in order}
    with tempfile.TemporaryDirectory(prefix="vigil-rollout-bench-") as tmp:
        root = Path(tmp)
        stores = _stores(train_template(root / "template"), root / "stores")
        body = root / "body.json"
        body.write_bytes(payloads.v1_body([0]))
        for i in range(args.repeat):
            # Each round starts with another variant: what a server leaves behind (the kernel
            # writing back the log it delivered at shutdown) lands on each one in turn.
            k = i % len(order)
            for variant in order[k:] + order[:k]:
                console.print(f"round {i + 1}/{args.repeat}: {variant}")
                work = root / "runs" / f"{variant}-{i}"
                runs[variant].append(_measure(args, stores.get(variant), work, body))
    table = Table(title=f"single-row V1, {args.connections} connections, medians of {args.repeat}")
    cols = ("rollout", "req/s", "p50 ms", "p99 ms", "p99/p50", "vs none", "target", "errors")
    extra = ("CPU µs/req", "CPU vs none") + (("p99 vs floor",) if FLOOR in runs else ())
    for col in (*cols, *extra):
        table.add_column(col, justify="right")
    floor_p99 = statistics.median(r["p99_ms"] for r in runs[FLOOR]) if FLOOR in runs else 0.0
    base = statistics.median(r["rps"] for r in runs["none"])
    base_cpu = statistics.median(r["cpu_us"] for r in runs["none"])
    missed = []
    for variant in order:
        rps = statistics.median(r["rps"] for r in runs[variant])
        p50 = statistics.median(r["p50_ms"] for r in runs[variant])
        p99 = statistics.median(r["p99_ms"] for r in runs[variant])
        tail = p99 / p50 if p50 else 0.0
        ratio = rps / base if base else 0.0
        if variant == FLOOR:  # the machine's tail: a reference, not a target
            ok, wanted = True, "-"
        elif args.connections == 1:  # latency at low load, not throughput
            ok, wanted = tail <= TAIL_TARGET, f"p99/p50 ≤ {TAIL_TARGET:g}"
        else:
            target = TARGETS.get(variant)
            ok = target is None or ratio >= target
            ok = ok and (variant != "shadow" or p99 <= P99_TARGET_MS)
            wanted = "-" if target is None else f"≥ {target:.2f}"
            if variant == "shadow":
                wanted += f", p99 ≤ {P99_TARGET_MS:g}"
        if not ok:
            missed.append(variant)
        errors = str(sum(r["errors"] for r in runs[variant]))
        cpu = statistics.median(r["cpu_us"] for r in runs[variant])
        cells = [
            variant, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{tail:.1f}", f"{ratio:.3f}",
            wanted, errors, f"{cpu:.1f}", f"{base_cpu / cpu if cpu else 0.0:.3f}",
        ]  # fmt: skip
        if floor_p99:
            cells.append(f"{p99 / floor_p99:.2f}")
        table.add_row(*cells)
    console.print(table)
    console.print(f"per round: {runs}")
    console.print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
