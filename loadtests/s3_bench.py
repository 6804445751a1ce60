"""The I/O log on an object store, measured: delivery, many writers, export, compaction.

    python -m loadtests.s3_bench [--rows 1000000] [--writers 8] [--endpoint URL --bucket B]

Without ``--endpoint`` it starts moto's S3 server on loopback (tests/s3server.py finds it), so the
numbers include a Python S3 server on the same CPUs: a real object store is not slower. Spool
segments of the demo model (30 features, 10 rows a request, ~8 MiB each) are built with the
spool's own encoder, then:

1. one deliverer delivers writer 0's segments: rows/s of ``deliver_segment`` (read + convert +
   PUT);
2. ``--writers`` processes deliver all writers' segments at once to the same bucket (writer 0's
   again: a redelivery), then every key is counted: no lost or duplicated row;
3. ``vigil logs export`` of one model/version/day, as a child process: rows/s, rows per
   CPU-second (user + system of every thread: a steadier measure on a shared machine), peak RSS;
4. ``compact --older-than 0s``: seconds, files before/after; then the export again, and once
   more in this process (imports done: the rate a long window tends to).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from model_store.demo import DEMO_MODEL, demo_data, train_demo
from model_store.store import ModelStore
from service.iolog.compaction import compact
from service.iolog.deliver import deliver_segment
from service.iolog.export import export as export_stream
from service.iolog.frames import Schema, encode_prediction
from service.iolog.reader import open_predictions
from service.iolog.record import IORecord
from service.iolog.s3_store import open_s3_store
from service.settings import Settings

console = Console(stderr=True)
REQUEST_ROWS = 10
SEGMENT_ROWS = 20_000  # ~8 MiB of spool with 30 features, as VIGIL_SPOOL_SEGMENT_BYTES rotates


def write_segments(out: Path, writer: int, rows: int, t0: float) -> list[Path]:
    x_frame, _, classes = demo_data()
    x, names = x_frame.to_numpy(), tuple(x_frame.columns)
    rng = np.random.default_rng(writer)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    schema: Schema | None = None
    chunks: list[bytes] = []
    n = 0
    for r in range(rows // REQUEST_ROWS):
        idx = rng.integers(0, len(x), REQUEST_ROWS)
        proba = rng.random((REQUEST_ROWS, 2)).astype("f4")
        rec = IORecord(
            f"w{writer}-{r}", t0 + (writer * rows + r * REQUEST_ROWS) * 0.01, DEMO_MODEL, 1,
            "0" * 64, "v1_predict", 200, 0.002, names, x[idx], tuple(classes),
            (proba[:, 1] > 0.5).astype("i8"), proba, {},
        )  # fmt: skip
        if schema is None:
            schema = Schema.build(rec, None)
            chunks.append(schema.frame())
        chunks.append(encode_prediction(rec, schema, None))
        n += REQUEST_ROWS
        if n >= SEGMENT_ROWS:
            paths.append(_flush(out, writer, len(paths), chunks))
            schema, chunks, n = None, [], 0
    if chunks:
        paths.append(_flush(out, writer, len(paths), chunks))
    return paths


def _flush(out: Path, writer: int, k: int, chunks: list[bytes]) -> Path:
    path = out / f"seg-{writer:02d}-{k:05d}.seg"
    path.write_bytes(b"".join(chunks))
    return path


def deliver_all(settings: Settings, paths: list[Path]) -> int:
    store = open_s3_store(settings)
    rows = 0
    for p in paths:
        rows += deliver_segment(store, p, f"bench-{p.stem}")["predictions"]
    return rows


def _writer_process(args: tuple[Settings, list[Path]]) -> tuple[int, float]:
    t = time.perf_counter()  # after the process's imports: delivery only
    rows = deliver_all(*args)
    return rows, time.perf_counter() - t


@dataclass(frozen=True, slots=True)
class ExportRun:
    rows: int
    seconds: float
    cpu_seconds: float  # user + system, every thread
    peak_rss_mib: float


def export(settings_env: dict[str, str], day: datetime, out: Path) -> ExportRun:
    """``vigil logs export`` as a user runs it: a child process, start-up included."""
    argv = [
        sys.executable, "-m", "service.cli", "logs", "export", "--model", DEMO_MODEL,
        "--version", "1", "--since", day.isoformat(),
        "--until", (day + timedelta(days=1)).isoformat(), "--out", str(out),
    ]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=settings_env, cwd=Path(__file__).resolve().parent.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("export failed")
    cpu = usage.ru_utime + usage.ru_stime
    return ExportRun(pq.ParquetFile(out).metadata.num_rows, seconds, cpu, usage.ru_maxrss / 1024)


def export_warm(settings: Settings, day: datetime, out: Path) -> ExportRun:
    """The same export in this process, whose imports are done: the rate a long window tends
    to, once the CLI's start-up (~0.6 s of imports) no longer counts."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    stream = open_predictions(settings, DEMO_MODEL, 1, day, day + timedelta(days=1))
    rows = export_stream(stream, out).rows
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return ExportRun(rows, seconds, cpu, after.ru_maxrss / 1024)


def _report(out: dict[str, object], name: str, run: ExportRun) -> None:
    out[f"export rows/s ({name})"] = run.rows / run.seconds
    out[f"export rows per CPU-second ({name})"] = run.rows / run.cpu_seconds
    out[f"export peak RSS MiB ({name})"] = run.peak_rss_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--endpoint", default="", help="an S3-compatible endpoint to use")
    parser.add_argument("--bucket", default="", help="an existing bucket (with --endpoint)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="s3-bench-"))
    moto = None
    if args.endpoint:
        endpoint, bucket = args.endpoint, args.bucket
    else:
        from tests.s3server import MotoServer, aws_env, moto_python
        from tests.servers import free_port

        python = moto_python()
        if python is None:
            raise SystemExit("moto[server] not found: see tests/s3server.py")
        os.environ.update(aws_env())
        moto = MotoServer(python, free_port(), home / "moto.log")
        moto.start()
        endpoint, bucket = moto.endpoint, moto.new_bucket()
    env = {
        **os.environ,
        "VIGIL_MODEL_STORE": str(home / "models"),
        "VIGIL_DATA_DIR": str(home / "data"),
        "VIGIL_LOG_STORE": f"s3://{bucket}/bench",
        "VIGIL_S3_ENDPOINT_URL": endpoint,
        "VIGIL_S3_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "VIGIL_S3_TIMEOUT_S": "60",
    }
    os.environ.update(env)
    settings = Settings()
    try:
        results = run(args, home, env, settings)
    finally:
        if moto is not None:
            moto.stop()
    table = Table("measure", "value")
    for k, v in results.items():
        table.add_row(k, f"{v:,.1f}" if isinstance(v, float) else str(v))
    Console().print(table)
    print(json.dumps(results))


def run(
    args: argparse.Namespace, home: Path, env: dict[str, str], s: Settings
) -> dict[str, object]:
    train_demo(ModelStore(home / "models"))
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    per = args.rows // args.writers
    with console.status("building spool segments…"):
        shares = [
            write_segments(home / "spool", w, per, day.timestamp() + 1) for w in range(args.writers)
        ]
    out: dict[str, object] = {"rows": per * args.writers, "writers": args.writers}
    t = time.perf_counter()
    rows = deliver_all(s, shares[0])
    seconds = time.perf_counter() - t
    out["one deliverer rows/s"] = rows / seconds
    out["one deliverer segments"] = len(shares[0])
    with multiprocessing.get_context("spawn").Pool(args.writers) as pool:
        each = pool.map(_writer_process, [(s, p) for p in shares])
    # all rows over the slowest writer's delivery time (process start-up excluded)
    out[f"{args.writers} deliverers rows/s"] = sum(r for r, _ in each) / max(t for _, t in each)
    store = open_s3_store(s)
    keys = [b.column("request_id") for src in store.prediction_batches(
        DEMO_MODEL, 1, None, None, ["request_id", "row"]) for b in src.batches]  # fmt: skip
    ids = pc.unique(pa_concat(keys))
    stored = sum(len(k) for k in keys)
    out["stored rows"] = stored
    out["distinct request ids"] = len(ids)
    if stored != out["rows"] or len(ids) * REQUEST_ROWS != stored:
        raise SystemExit(f"lost or duplicated rows: {out}")
    files_before = sum(len(f) for f in store.prediction_files(DEMO_MODEL, 1, None, None).values())
    _report(out, "uncompacted", export(env, day, home / "export-before.parquet"))
    t = time.perf_counter()
    done = compact(store, timedelta(0), grace=timedelta(0))
    seconds = time.perf_counter() - t
    out["compaction rows/s"] = done.rows / seconds
    out["compaction MB/s (stored bytes in)"] = done.bytes_in / 1e6 / seconds
    files_after = sum(len(f) for f in store.prediction_files(DEMO_MODEL, 1, None, None).values())
    out["files before → after compaction"] = f"{files_before} → {files_after}"
    cold = export(env, day, home / "export-after.parquet")
    _report(out, "compacted", cold)
    out["exported rows"] = cold.rows
    warm = export_warm(s, day, home / "export-warm.parquet")
    if warm.rows != cold.rows:
        raise SystemExit(f"the in-process export wrote {warm.rows} rows, the CLI {cold.rows}")
    out["export rows/s (compacted, in process)"] = warm.rows / warm.seconds
    out["export rows per CPU-second (compacted, in process)"] = warm.rows / warm.cpu_seconds
    return out


def pa_concat(chunks: list) -> object:  # type: ignore[type-arg]
    import pyarrow as pa

    return pa.chunked_array(chunks, pa.string())


if __name__ == "__main__":
    main()
