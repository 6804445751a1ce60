"""Loading many large versions at once: does the server stay live?

    python -m loadtests.model_load_bench [--versions 12] [--trees 120] [--per-version 3]
                                         [--baseline fec31d3] [--control] [--out result.json]

Registers ``--versions`` + 1 versions of one random forest (``--trees`` trees) in a temporary
store, with the alias on the first, then, on a fresh server, fires ``--per-version`` concurrent
first requests at each other version while another process polls ``/v2/health/live`` every
5 ms. It reports the live latency (p50, p99, max; medians over ``--repeat`` fresh servers), how
long the predictions took, their statuses and how many loads and unloads the server counted
(``vigil_model_loads_total``; n/a where the code has no such counter). With ``--baseline REF``
the same runs are made first on that commit's code (from ``git archive``), so both figures come
from one run of the script on one machine; ``--control`` adds runs whose requests all go to the
already loaded version, the latency the machine shows without any load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from loadtests.servers import ROOT, Server, start_vigil
from model_store.demo import train_demo
from model_store.registration import register_sklearn
from model_store.store import ModelStore

console = Console(width=None if sys.stdout.isatty() else 120)
MODEL = "forest"
N_FEATURES = 20


def build_store(root: Path, versions: int, trees: int, rows: int) -> Path:
    """The demo model plus ``versions + 1`` copies of one forest; the alias names the first."""
    store_dir = root / "models"
    store = ModelStore(store_dir)
    train_demo(store)
    x_np, y = make_classification(
        n_samples=rows, n_features=N_FEATURES, n_informative=10, random_state=0
    )
    x = pd.DataFrame(x_np, columns=[f"f{i}" for i in range(N_FEATURES)])
    forest = RandomForestClassifier(trees, random_state=0, n_jobs=-1).fit(x_np, y)
    mask = np.random.default_rng(0).random(rows) < 0.1
    first = register_sklearn(store, MODEL, forest, x, y, holdout_mask=mask)
    # Converting a forest takes seconds: the other versions reuse its bytes under new numbers.
    onnx = store.model_path(MODEL, first.version).read_bytes()
    reference = store.reference_path(MODEL, first.version)
    for _ in range(versions):
        store.register(
            MODEL,
            onnx,
            lambda v, sha: first.model_copy(update={"version": v, "sha256": sha}),
            lambda dest: shutil.copyfile(reference, dest),
        )
    store.set_alias(MODEL, first.version)
    return store_dir


def baseline_tree(ref: str, dest: Path) -> Path:
    """The source tree of commit ``ref`` from ``git archive``; the checkout is untouched."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


class LivePoller:
    """``loadtests.live_poller`` in a child process: GET /v2/health/live every 5 ms."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtests.live_poller", url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the live poller did not start")

    def stop(self) -> list[float]:
        out, _ = self.proc.communicate(timeout=30)  # closing stdin stops it
        latencies: list[float] = orjson.loads(out)
        return latencies


async def _first_requests(url: str, targets: list[int], body: bytes) -> list[tuple[int, float]]:
    """One POST per target version, all at once (one thread: little client CPU in the way)."""
    limits = httpx.Limits(max_connections=len(targets))
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def one(version: int) -> tuple[int, float]:
            start = time.perf_counter()
            r = await client.post(
                f"/v1/models/{MODEL}/versions/{version}/predict",
                content=body,
                headers={"content-type": "application/json"},
            )
            return r.status_code, time.perf_counter() - start

        return await asyncio.gather(*(one(v) for v in targets))


def _counter(metrics: str, name: str) -> float | None:
    """Sum of a counter's samples for MODEL; None for code that has no load counters."""
    if "vigil_model_loads" not in metrics:
        return None
    lines = [ln for ln in metrics.splitlines() if ln.startswith(name + "{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if f'model="{MODEL}"' in ln)


def measure(server: Server, versions: list[int], per_version: int) -> dict[str, Any]:
    row = {f"f{i}": 0.0 for i in range(N_FEATURES)}
    body = orjson.dumps({"instances": [row]})
    poller = LivePoller(server.url)
    time.sleep(0.3)  # a quiet stretch first: an idle server's latency
    targets = [v for v in versions for _ in range(per_version)]
    start = time.perf_counter()
    answers = asyncio.run(_first_requests(server.url, targets, body))
    wall = time.perf_counter() - start
    time.sleep(0.3)
    polled = poller.stop()
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    loaded = httpx.get(server.url + "/v1/models", timeout=10).json()["models"][MODEL]
    lat_ms = sorted(x * 1000 for x in polled if x >= 0)
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "live_polls": len(lat_ms),
        "live_failures": sum(x < 0 for x in polled),
        "live_p50_ms": statistics.median(lat_ms),
        "live_p99_ms": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))],
        "live_max_ms": lat_ms[-1],
        "requests": len(answers),
        "statuses": statuses,
        "first_requests_wall_s": wall,
        "slowest_first_request_s": max(t for _, t in answers),
        "loads": _counter(metrics, "vigil_model_loads_total"),
        "unloads": _counter(metrics, "vigil_model_unloads_total"),
        "loaded_at_end": len(loaded["loaded_versions"]),
    }


def run(
    label: str, source: Path, template: Path, workdir: Path, args: argparse.Namespace,
    *, control: bool = False,
) -> Any:  # fmt: skip
    """``control``: the same burst of requests, all to the alias's (loaded) version: the
    latency this machine shows without any load, to read the other columns against."""
    settings = {"VIGIL_IOLOG_ENABLED": "false"}
    if args.max_loaded is not None:
        settings["VIGIL_MAX_LOADED_VERSIONS"] = str(args.max_loaded)
    runs = []
    for i in range(args.repeat):
        server = start_vigil(f"{label}-{i}", template, workdir, settings, source=source)
        try:
            versions = ModelStore(template).versions(MODEL)[1:]
            if control:
                versions = [1] * len(versions)
            runs.append(measure(server, versions, args.per_version))
        finally:
            server.stop()
    return aggregate(runs)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (a fresh server each), plus the worst live latency of all."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if key == "statuses":
            out[key] = {s: sum(r[key].get(s, 0) for r in runs) for s in first}
        elif first is None:
            out[key] = None
        else:
            out[key] = statistics.median(values)
        if key == "live_max_ms":
            out["live_max_ms_worst_run"] = max(values)
    return out


def render(results: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=f"{MODEL}: concurrent first requests to unloaded versions")
    table.add_column("")
    for label in results:
        table.add_column(label, justify="right")

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
        return str(value)

    for key in next(iter(results.values())):
        table.add_row(key, *(fmt(r[key]) for r in results.values()))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=12, help="Versions requested at once.")
    parser.add_argument("--trees", type=int, default=120, help="Trees in the forest.")
    parser.add_argument("--rows", type=int, default=8000, help="Training rows (tree size).")
    parser.add_argument("--per-version", type=int, default=3, help="Concurrent first requests.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs per tree (medians).")
    parser.add_argument("--max-loaded", type=int, default=None, help="VIGIL_MAX_LOADED_VERSIONS.")
    parser.add_argument("--baseline", default=None, help="Also run this git commit's code first.")
    parser.add_argument(
        "--control", action="store_true", help="Also send the burst to the loaded version only."
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-load-bench-") as tmp:
        workdir = Path(tmp)
        with console.status(f"training a {args.trees}-tree forest, registering versions…"):
            template = build_store(workdir / "template", args.versions, args.trees, args.rows)
        size_mb = ModelStore(template).model_path(MODEL, 1).stat().st_size / 1e6
        console.print(f"{args.versions + 1} versions of a {size_mb:.1f} MB forest registered")
        results: dict[str, dict[str, Any]] = {}
        if args.baseline:
            source = baseline_tree(args.baseline, workdir / "baseline-src")
            with console.status(f"baseline {args.baseline}…"):
                results[f"baseline {args.baseline}"] = run(
                    "baseline", source, template, workdir, args
                )
        with console.status("this tree…"):
            results["this tree"] = run("current", ROOT, template, workdir, args)
        if args.control:
            with console.status("control: no loads…"):
                results["control, no loads"] = run(
                    "control", ROOT, template, workdir, args, control=True
                )
    console.print(render(results))
    if args.out:
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    summary = "; ".join(
        f"{label}: live p50 {r['live_p50_ms']:.1f} ms, max {r['live_max_ms']:.1f} ms"
        for label, r in results.items()
    )
    console.print(summary)


if __name__ == "__main__":
    main()
