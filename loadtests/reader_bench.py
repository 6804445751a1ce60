"""Readers on a big window: ``vigil logs export`` and ``vigil drift run`` over N logged rows.

    python -m loadtests.reader_bench [--rows 5000000] [--code DIR] [--keep DIR]

Generates N prediction rows of the demo model (plus feedback for 10 % of them) straight into a
Parquet log store, in the store's own layout and schema (built by ``service.iolog.schema`` from a
real spool frame, so the files are what the deliverer writes), vectorised. Then runs both commands
as child processes of the code in ``--code`` (default: this checkout; point it at an old worktree
to compare) and reports each one's wall time and peak RSS (``wait4`` of the child).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from model_store.demo import DEMO_MODEL, demo_data, train_demo
from model_store.store import ModelStore
from service.iolog.frames import FEEDBACK, PREDICTIONS, Frame, Schema
from service.iolog.schema import FEEDBACK_SCHEMA, TS, predictions_table, proba_column

FILE_ROWS = 100_000
LABELLED = 0.1
console = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    seconds: float
    peak_rss_mib: float
    returncode: int


def store_schema(features: list[str], classes: list[str], sha256: str) -> pa.Schema:
    """The predictions schema exactly as the deliverer writes it, from one real frame."""
    schema = Schema(
        f"{DEMO_MODEL}/1/x",
        DEMO_MODEL,
        1,
        sha256,
        tuple(features),
        (),
        tuple(classes),
        tuple(range(len(features))),
    )
    rec = np.zeros(1, dtype=schema.dtype)
    header = {
        "t": "p",
        "k": schema.key,
        "id": "x",
        "ts": 0.0,
        "e": "v1",
        "st": 200,
        "l": 0.0,
        "n": 1,
    }
    return predictions_table([Frame(header, rec.tobytes(), schema)]).schema


def _file(
    schema: pa.Schema,
    x: np.ndarray,
    classes: list[str],
    start: int,
    t0: datetime,
    rng: np.random.Generator,
) -> pa.Table:
    n = FILE_ROWS
    idx = rng.integers(0, len(x), size=n)
    values = x[idx] + rng.normal(size=(n, x.shape[1])) * (0.02 * x.std(axis=0))
    p1 = rng.random(n)
    seconds = start + np.arange(n)  # one request a second: files are consecutive in time
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(np.char.add("req-", np.arange(start, start + n).astype(str))),
        "row": pa.array(np.zeros(n, np.int32)),
        "received_at": pa.array(
            (int(t0.timestamp()) + seconds).astype("int64") * 1_000_000, pa.int64()
        ).cast(TS),
        "sha256": pa.array(np.full(n, "0" * 64)),
        "endpoint": pa.array(np.full(n, "v1_predict")),
        "status": pa.array(np.full(n, 200, np.int32)),
        "latency_s": pa.array(rng.exponential(0.002, n)),
        "prediction": pa.array(np.asarray(classes)[(p1 > 0.5).astype(int)]),
        proba_column(classes[0]): pa.array(1 - p1),
        proba_column(classes[1]): pa.array(p1),
        "metadata": pa.array(np.full(n, "{}")),
    }
    if "role" in schema.names:
        cols["role"] = pa.array(np.full(n, "primary"))
    # the rest are the features, in the demo data's column order
    for j, name in enumerate([name for name in schema.names if name not in cols]):
        cols[name] = pa.array(np.ascontiguousarray(values[:, j]))
    return pa.table([cols[n] for n in schema.names], schema=schema)


def generate(root: Path, rows: int, t0: datetime) -> None:
    x_frame, _, classes = demo_data()
    features = list(x_frame.columns)
    schema = store_schema(features, list(classes), "0" * 64)
    x = x_frame.to_numpy()
    rng = np.random.default_rng(1)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating the log store", total=rows)
        for start in range(0, rows, FILE_ROWS):
            table = _file(schema, x, list(classes), start, t0, rng)
            day = (t0 + timedelta(seconds=start)).date().isoformat()
            d = root / PREDICTIONS / f"model={DEMO_MODEL}" / "version=1" / f"date={day}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, d / f"part-bench-{start:09d}.parquet", compression="zstd")
            _feedback(root, table, rng, day, start)
            bar.update(task, advance=table.num_rows)


def _feedback(root: Path, table: pa.Table, rng: np.random.Generator, day: str, start: int) -> None:
    pick = np.flatnonzero(rng.random(table.num_rows) < LABELLED)
    labels = table.column("prediction").take(pa.array(pick))
    fb = pa.table(
        [
            table.column("request_id").take(pa.array(pick)),
            table.column("row").take(pa.array(pick)),
            labels,
            table.column("received_at").take(pa.array(pick)),
            pa.array(np.full(len(pick), "bench")),
        ],
        schema=FEEDBACK_SCHEMA,
    )
    d = root / FEEDBACK / f"model={DEMO_MODEL}" / f"date={day}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(fb, d / f"part-bench-{start:09d}.parquet", compression="zstd")


def measure(
    name: str, argv: list[str], env: dict[str, str], code: Path, timeout: float | None = None
) -> Run:
    """Wall time and the child's own peak RSS (``wait4`` reports the child's rusage); a child
    still running after ``timeout`` seconds is killed (returncode -9)."""
    with console.status(f"running {name}…"):
        t = time.perf_counter()
        # cwd too, not only PYTHONPATH: ``python -m`` puts the working directory first on the path
        proc = subprocess.Popen(
            argv, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        killer = threading.Timer(timeout, proc.kill) if timeout else None
        if killer is not None:
            killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        if killer is not None:
            killer.cancel()
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        console.print(f"[red]{name} failed ({proc.returncode})[/]\n{err[-2000:]}")
    return Run(name, seconds, usage.ru_maxrss / 1024, proc.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--code", type=Path, default=Path.cwd(), help="checkout to run")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    args = parser.parse_args()
    home = (args.keep or Path(tempfile.mkdtemp(prefix="reader-bench-"))).resolve()
    models, stamp = home / "models", home / "t0"
    if stamp.is_file():  # a kept store: same rows, same window, so runs compare
        t0 = datetime.fromisoformat(stamp.read_text())
    else:
        t0 = (datetime.now(UTC) - timedelta(seconds=args.rows + 3600)).replace(microsecond=0)
        train_demo(ModelStore(models))
        generate(home / "iolog", args.rows, t0)
        stamp.write_text(t0.isoformat())
    since, until = t0.isoformat(), (t0 + timedelta(seconds=args.rows)).isoformat()
    env = {
        **os.environ,
        "PYTHONPATH": str(args.code.resolve()),
        "VIGIL_MODEL_STORE": str(models),
        "VIGIL_DATA_DIR": str(home / "data"),
        "VIGIL_LOG_STORE": str(home / "iolog"),
    }
    cli = [sys.executable, "-m", "service.cli"]
    window = ["--model", DEMO_MODEL, "--since", since, "--until", until]
    code = args.code.resolve()
    export = [*cli, "logs", "export", *window, "--out", str(home / "out" / "export.parquet")]
    drift = [*cli, "drift", "run", *window, "--out", str(home / "drift")]
    runs = [measure("export parquet", export, env, code), measure("drift run", drift, env, code)]
    exported = pq.ParquetFile(home / "out" / "export.parquet").metadata.num_rows
    table = Table("command", "rows", "seconds", "peak RSS (MiB)", "exit")
    for r in runs:
        table.add_row(
            r.name, f"{args.rows:,}", f"{r.seconds:.1f}", f"{r.peak_rss_mib:.0f}", str(r.returncode)
        )
    Console().print(table)
    worst = max(r.peak_rss_mib for r in runs)
    commit = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    console.print(
        f"{args.rows:,} rows, code {code} ({commit or 'no git'}): exported {exported:,}; "
        f"peak RSS at most {worst:.0f} MiB; data in {home}"
    )


if __name__ == "__main__":
    main()
