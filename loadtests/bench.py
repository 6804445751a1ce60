"""The benchmark: ``python -m loadtests.bench [--duration 10] [--repeat 3]``.

Starts each server in turn (one uvicorn worker pinned to one CPU), drives it with wrk pinned to
the other CPU at fixed concurrency, and prints one table for, in the same run: the naive baseline,
Vigil with I/O logging and metrics off, and Vigil as shipped (single-row V1, V2, 1,000-row
batches), with the ratios the performance targets are stated in. Results also go to JSON.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loadtests import payloads
from loadtests.servers import Server, demo_onnx, start_naive, start_vigil, train_template
from loadtests.wrk import run_wrk

# A wide table even when stdout is not a terminal (CI logs, pipes).
console = Console(width=None if sys.stdout.isatty() else 120)
BATCH = 1000


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    label: str
    kind: str  # v1 | v2
    rows: int


@dataclass(frozen=True, slots=True)
class ServerSpec:
    key: str
    label: str
    settings: dict[str, str] | None  # None: the naive baseline
    scenarios: tuple[Scenario, ...]


V1 = Scenario("v1", "V1 1 row", "v1", 1)
V2 = Scenario("v2", "V2 1 row", "v2", 1)
BATCH_V1 = Scenario("batch", f"V1 {BATCH:,} rows", "v1", BATCH)
SERVERS = (
    ServerSpec("naive", "1 naive baseline", None, (V1, BATCH_V1)),
    ServerSpec(
        "vigil_off",
        "2 Vigil, log+metrics off",
        {"VIGIL_IOLOG_ENABLED": "false", "VIGIL_METRICS_ENABLED": "false"},
        (V1, V2, BATCH_V1),
    ),
    ServerSpec("vigil", "3 Vigil as shipped", {}, (V1, V2, BATCH_V1)),
)
# (name, numerator, denominator, target, higher is better)
RATIOS = (
    ("3/1 shipped ÷ naive", ("vigil", "v1"), ("naive", "v1"), 3.0),
    ("3/2 shipped ÷ off", ("vigil", "v1"), ("vigil_off", "v1"), 0.85),
    ("V2 ÷ V1 shipped", ("vigil", "v2"), ("vigil", "v1"), 0.90),
)


def _bodies(workdir: Path) -> dict[Scenario, Path]:
    out: dict[Scenario, Path] = {}
    for scenario in (V1, V2, BATCH_V1):
        indices = [i % len(payloads.demo().rows) for i in range(scenario.rows)]
        body = payloads.v1_body(indices) if scenario.kind == "v1" else payloads.v2_body(indices)
        path = workdir / f"body-{scenario.key}.json"
        path.write_bytes(body)
        out[scenario] = path
    return out


def _start(spec: ServerSpec, template: Path, workdir: Path, cpu: str) -> Server:
    if spec.settings is None:
        return start_naive(spec.key, demo_onnx(template), workdir, cpu=cpu)
    return start_vigil(spec.key, template, workdir, spec.settings, cpu=cpu)


def _measure(
    args: argparse.Namespace, server: Server, scenario: Scenario, body: Path
) -> dict[str, Any]:
    path = payloads.V1_PATH if scenario.kind == "v1" else payloads.V2_PATH
    opts = {"connections": args.connections, "threads": args.threads, "cpu": args.wrk_cpu}
    if args.warmup > 0:
        run_wrk(server.url + path, body, duration_s=args.warmup, **opts)
    result = run_wrk(server.url + path, body, duration_s=args.duration, **opts)
    return {
        **asdict(result),
        "rps": result.rps,
        "rows_per_s": result.rps * scenario.rows,
        "rows_per_request": scenario.rows,
    }


def run_once(
    args: argparse.Namespace, workdir: Path, template: Path, progress: Progress, task: Any
) -> dict[str, dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    bodies = _bodies(workdir)
    results: dict[str, dict[str, Any]] = {}
    for spec in SERVERS:
        server = _start(spec, template, workdir, args.server_cpu)
        try:
            for scenario in spec.scenarios:
                progress.update(task, description=f"{spec.label}: {scenario.label}")
                results[f"{spec.key}/{scenario.key}"] = _measure(
                    args, server, scenario, bodies[scenario]
                )
                progress.advance(task)
        finally:
            assert server.sampler is not None
            peak = server.sampler.peak
            server.stop()
        for scenario in spec.scenarios:
            results[f"{spec.key}/{scenario.key}"]["peak_rss_mb"] = peak / 2**20
    return results


def _ratios(run: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {
        name: run[f"{a}/{x}"]["rps"] / run[f"{b}/{y}"]["rps"] for name, (a, x), (b, y), _ in RATIOS
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def _target(value: float, target: str, ok: bool) -> dict[str, Any]:
    return {"value": value, "target": target, "ok": ok}


def summarise(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    median = {key: _median([r[key] for r in runs]) for key in runs[0]}
    ratios = _median([_ratios(r) for r in runs])
    shipped, batch = median["vigil/v1"], median["vigil/batch"]
    targets = {
        name: _target(ratios[name], f"≥ {t:g}", ratios[name] >= t) for name, _, _, t in RATIOS
    }
    targets["p99 ms shipped V1"] = _target(shipped["p99_ms"], "≤ 10", shipped["p99_ms"] <= 10)
    rows = batch["rows_per_s"]
    targets["rows/s 1,000-row batch"] = _target(rows, "≥ 150,000", rows >= 150_000)
    return {"median": median, "ratios": ratios, "targets": targets}


def render(summary: dict[str, Any], repeat: int) -> Table:
    table = Table(title=f"Vigil benchmark (median of {repeat} run{'s' * (repeat > 1)})")
    for col in (
        "server",
        "request",
        "req/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "peak RSS MB",
    ):
        table.add_column(col, justify="left" if col in ("server", "request") else "right")
    for spec in SERVERS:
        for scenario in spec.scenarios:
            m = summary["median"][f"{spec.key}/{scenario.key}"]
            table.add_row(
                spec.label, scenario.label, f"{m['rps']:,.0f}", f"{m['rows_per_s']:,.0f}",
                f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['errors'] + m['non_2xx']:g}",
                f"{m['peak_rss_mb']:.0f}",
            )  # fmt: skip
        table.add_section()
    for name, t in summary["targets"].items():
        mark = "[green]ok[/]" if t["ok"] else "[red]missed[/]"
        table.add_row(name, f"target {t['target']}", f"{t['value']:,.2f}", "", "", "", "", mark)
    return table


def _machine() -> dict[str, Any]:
    import os

    import psutil

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[1] if __doc__ else None
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--repeat", type=int, default=1, help="runs; the table shows medians")
    p.add_argument("--server-cpu", default="0", help="CPU list the server is pinned to")
    p.add_argument("--wrk-cpu", default="1", help="CPU list wrk is pinned to")
    p.add_argument(
        "--out", type=Path, default=None, help="results JSON (default loadtests/results/)"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = (
        args.out
        or Path(__file__).with_name("results") / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    runs: list[dict[str, dict[str, Any]]] = []
    steps = args.repeat * sum(len(s.scenarios) for s in SERVERS)
    with (
        tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task("training the demo model…", total=steps)
        template = train_template(Path(tmp) / "template")
        for i in range(args.repeat):
            runs.append(run_once(args, Path(tmp) / f"run{i}", template, progress, task))
    summary = summarise(runs)
    console.print(render(summary, args.repeat))
    doc = {
        "machine": _machine(),
        "config": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        **summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    missed = [name for name, t in summary["targets"].items() if not t["ok"]]
    failed = [k for k, m in summary["median"].items() if m["errors"] or m["non_2xx"]]
    shipped = summary["median"]["vigil/v1"]
    console.print(
        f"Vigil as shipped: {shipped['rps']:,.0f} req/s, p99 {shipped['p99_ms']:.1f} ms, "
        f"{summary['ratios'][RATIOS[0][0]]:.2f}x the naive baseline; "
        f"{len(summary['targets']) - len(missed)}/{len(summary['targets'])} targets met"
        f"{'; ERRORS in ' + ', '.join(failed) if failed else ''}; results in {out}"
    )
    if failed:
        return 2
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
