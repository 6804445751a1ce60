"""Console page renders with 1 M logged rows in the window.

    python -m loadtests.ui_bench [--rows 1000000] [--repeat 9] [--keep DIR]

Writes N prediction rows of the demo model (10 % labelled) received over the last 55 minutes
straight into a Parquet log store, in the deliverer's layout and schema (``loadtests.reader_bench``
builds the schema from a real spool frame), plus a few drift runs. Then renders each console page
``--repeat`` times in-process (the app behind Starlette's TestClient, so routing, the worker
threads and template rendering count, the network does not) and reports the median and p95 of
wall time and of the process's CPU time per request (CPU time is what a busy machine cannot
inflate: the wall figures on a shared machine include waiting for a core).

Last, single-row predictions are timed through the same app, first alone, then while another
thread renders the console's heaviest pages over and over: the console must not hold the event
loop, so predictions should not wait for a page.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from starlette.testclient import TestClient

from loadtests.reader_bench import FILE_ROWS, _feedback, store_schema
from model_store.demo import DEMO_MODEL, demo_data, train_demo
from model_store.registration import proba_column
from model_store.store import ModelStore
from monitoring.drift.job import run_drift
from service.app import create_app
from service.iolog.frames import PREDICTIONS
from service.iolog.schema import TS
from service.settings import Settings

SPAN = timedelta(minutes=55)
TOKEN = "ui-bench-token-0123456789"
console = Console(stderr=True)


def generate(root: Path, rows: int, t0: datetime) -> None:
    """``rows`` requests of one row each, evenly over ``SPAN`` from ``t0``, 100,000 a file."""
    x_frame, _, classes = demo_data()
    schema = store_schema(list(x_frame.columns), list(classes), "0" * 64)
    x = x_frame.to_numpy()
    rng = np.random.default_rng(1)
    step_us = SPAN.total_seconds() * 1e6 / rows
    for start in range(0, rows, FILE_ROWS):
        n = min(FILE_ROWS, rows - start)
        idx = rng.integers(0, len(x), size=n)
        p1 = rng.random(n)
        ts = int(t0.timestamp() * 1e6) + ((start + np.arange(n)) * step_us).astype("int64")
        cols: dict[str, pa.Array] = {
            "request_id": pa.array(np.char.add("req-", np.arange(start, start + n).astype(str))),
            "row": pa.array(np.zeros(n, np.int32)),
            "received_at": pa.array(ts, pa.int64()).cast(TS),
            "sha256": pa.array(np.full(n, "0" * 64)),
            "endpoint": pa.array(np.full(n, "v1_predict")),
            "status": pa.array(np.where(rng.random(n) < 0.001, 500, 200).astype(np.int32)),
            "latency_s": pa.array(rng.exponential(0.002, n)),
            "prediction": pa.array(np.asarray(classes)[(p1 > 0.5).astype(int)]),
            proba_column(classes[0]): pa.array(1 - p1),
            proba_column(classes[1]): pa.array(p1),
            "metadata": pa.array(np.full(n, "{}")),
            "role": pa.array(np.full(n, "primary")),
        }
        features = [name for name in schema.names if name not in cols]
        for j, name in enumerate(features):
            cols[name] = pa.array(np.ascontiguousarray(x[idx, j]))
        table = pa.table([cols[c] for c in schema.names], schema=schema)
        day = datetime.fromtimestamp(int(ts[0]) / 1e6, UTC).date().isoformat()
        d = root / PREDICTIONS / f"model={DEMO_MODEL}" / "version=1" / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, d / f"part-bench-{start:09d}.parquet", compression="zstd")
        _feedback(root, table, rng, day, start)


def measure(client: TestClient, path: str, repeat: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        r = client.get(path)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
    return walls, cpus


def _p95(values: list[float]) -> float:
    return float(np.quantile(values, 0.95))


def predictions(client: TestClient, n: int) -> list[float]:
    row = demo_data()[0].iloc[0].to_dict()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.post(f"/v1/models/{DEMO_MODEL}/predict", json={"instances": [row]})
        out.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return out


def beside_the_console(client: TestClient, pages: list[str], n: int) -> list[float]:
    stop = threading.Event()

    def render() -> None:
        while not stop.is_set():
            for path in pages:
                client.get(path)

    thread = threading.Thread(target=render)
    thread.start()
    try:
        return predictions(client, n)
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = parser.parse_args()
    home = (args.keep or Path(tempfile.mkdtemp(prefix="ui-bench-"))).resolve()
    now = datetime.now(UTC)
    settings = Settings(
        model_store=home / "models", data_dir=home / "data", log_store=str(home / "iolog"),
        admin_token=SecretStr(TOKEN), drift_max_rows=5000,
    )  # fmt: skip
    with console.status(f"generating {args.rows:,} rows and 3 drift runs in {home}"):
        train_demo(ModelStore(settings.model_store))
        t0 = now - SPAN - timedelta(minutes=1)
        generate(home / "iolog", args.rows, t0)
        for i in range(3):  # small windows: the drift page reads the index and drift.json
            start = t0 + timedelta(minutes=i)
            run_drift(settings, DEMO_MODEL, start, start + timedelta(minutes=1), html=False)
    m = f"/ui/models/{DEMO_MODEL}"
    pages = {
        "models": "/ui",
        "model": m,
        "drift": f"{m}/drift",
        "traffic (1 h)": f"{m}/traffic?window=1h",
        "logs (1 h: count + preview)": f"{m}/logs?since={t0:%Y-%m-%dT%H:%M:%S}",
        "back-test": f"{m}/backtest",
    }
    table = Table("page", "rows in window", "wall median", "wall p95", "CPU median", "CPU p95")
    with TestClient(create_app(settings)) as client:
        login = client.get("/ui/login")
        csrf = login.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.post("/ui/login", data={"token": TOKEN, "csrf": csrf})
        for name, path in pages.items():
            measure(client, path, 1)  # warm-up: imports, template compilation, file cache
            walls, cpus = measure(client, path, args.repeat)
            figures = [f(v) for v in (walls, cpus) for f in (statistics.median, _p95)]
            table.add_row(name, f"{args.rows:,}", *(f"{1000 * x:.0f} ms" for x in figures))
        predictions(client, 50)  # warm-up
        alone = predictions(client, 500)
        busy = beside_the_console(
            client, [pages["models"], pages["logs (1 h: count + preview)"]], 500
        )
    Console().print(table)
    console.print(f"{args.repeat} renders per page after one warm-up; data in {home}")
    load = Table("single-row predict", "median", "p99", "max")
    for name, values in (("alone", alone), ("while the console renders", busy)):
        figures = [statistics.median(values), float(np.quantile(values, 0.99)), max(values)]
        load.add_row(name, *(f"{1000 * x:.1f} ms" for x in figures))
    Console().print(load)


if __name__ == "__main__":
    main()
