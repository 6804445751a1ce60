"""``vigil drift run`` on 1 M and 10 M logged rows x 30 features, next to plain Evidently.

    python -m loadtests.drift_bench [--rows 1000000 10000000] [--keep DIR] [--plain-timeout 300]

For each size, the window is generated straight into a Parquet log store by
``loadtests.reader_bench`` (the deliverer's layout and schema, 10 % of rows labelled) and then
measured as child processes (wall time, and the child's own peak RSS from ``wait4``):

- ``vigil drift run`` as shipped (drift.html rendered), and with ``--no-html``;
- plain Evidently, what a user without Vigil would do: load the window's features and watched
  probability into pandas, run ``Report([DataDriftPreset()])`` on all of it against the reference
  sample and save the HTML. It runs under ``--plain-timeout`` seconds and a ``--plain-memory``
  GiB address-space cap; a run killed by either is reported as such, not as a time.

The first run of a version also writes ``reference_stats.json``; the vigil runs here come after a
warm-up run, so they use it as the scheduled job does.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from loadtests.reader_bench import Run, generate, measure
from model_store.demo import DEMO_MODEL, train_demo
from model_store.store import ModelStore

console = Console(stderr=True)


def _prepare(home: Path, rows: int) -> tuple[datetime, datetime]:
    stamp = home / "t0"
    if stamp.is_file():  # a kept store: the same rows and window, so runs compare
        t0 = datetime.fromisoformat(stamp.read_text().strip())
    else:
        home.mkdir(parents=True, exist_ok=True)
        t0 = (datetime.now(UTC) - timedelta(seconds=rows + 3600)).replace(microsecond=0)
        train_demo(ModelStore(home / "models"))
        generate(home / "iolog", rows, t0)
        stamp.write_text(t0.isoformat())
    return t0, t0 + timedelta(seconds=rows)


def _bench_size(home: Path, rows: int, args: argparse.Namespace) -> list[tuple[str, Run]]:
    since, until = _prepare(home, rows)
    env = {
        **os.environ,
        "PYTHONPATH": str(args.code),
        "VIGIL_MODEL_STORE": str(home / "models"),
        "VIGIL_DATA_DIR": str(home / "data"),
        "VIGIL_LOG_STORE": str(home / "iolog"),
    }
    window = ["--model", DEMO_MODEL, "--since", since.isoformat(), "--until", until.isoformat()]
    drift = [sys.executable, "-m", "service.cli", "drift", "run", *window]
    plain = [sys.executable, "-m", "loadtests.drift_bench", "--plain", str(home), str(rows)]
    plain += ["--plain-memory", str(args.plain_memory)]
    # the first run writes reference_stats.json, as a version's first scheduled run does
    measure("warm-up", [*drift, "--no-html", "--out", str(home / "warm")], env, args.code)
    return [
        ("vigil drift run", measure("vigil", [*drift, "--out", str(home / "v")], env, args.code)),
        (
            "vigil drift run --no-html",
            measure("no-html", [*drift, "--no-html", "--out", str(home / "n")], env, args.code),
        ),
        ("plain Evidently", measure("plain", plain, env, args.code, args.plain_timeout)),
    ]


def plain_evidently(home: Path, rows: int, memory_gib: float) -> None:
    """The window into pandas, Evidently's DataDriftPreset on all of it, the HTML saved."""
    cap = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from model_store.registration import proba_column

    store = ModelStore(home / "models")
    manifest = store.manifest(DEMO_MODEL, 1)
    columns = [*manifest.feature_names, proba_column(manifest.outputs.class_names[1])]
    # the store holds exactly the window's ``rows`` rows
    current = pd.read_parquet(
        home / "iolog" / "predictions" / f"model={DEMO_MODEL}", columns=columns
    )
    assert len(current) == rows, (len(current), rows)
    reference = pd.read_parquet(store.reference_path(DEMO_MODEL, 1), columns=columns)
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.save_html(str(home / "plain.html"))


def _verdict(run: Run, timeout: float) -> str:
    if run.returncode == 0:
        return "ok"
    if run.returncode == -9 and run.seconds >= timeout:
        return f"killed at the {timeout:.0f} s timeout"
    if run.returncode == 1:
        return "failed (out of memory under the cap?)"
    return f"exit {run.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR/<rows> and keep it")
    parser.add_argument("--code", type=Path, default=Path.cwd(), help="checkout to run")
    parser.add_argument("--plain-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--plain-memory", type=float, default=12.0, help="GiB of address space")
    parser.add_argument("--plain", nargs=2, metavar=("HOME", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain_evidently(Path(args.plain[0]), int(args.plain[1]), args.plain_memory)
        return
    args.code = args.code.resolve()
    root = (args.keep or Path(tempfile.mkdtemp(prefix="drift-bench-"))).resolve()
    table = Table("rows", "run", "seconds", "peak RSS (MiB)", "result")
    for rows in args.rows:
        for name, run in _bench_size(root / str(rows), rows, args):
            table.add_row(
                f"{rows:,}",
                name,
                f"{run.seconds:.1f}",
                f"{run.peak_rss_mib:.0f}",
                _verdict(run, args.plain_timeout),
            )
    Console().print(table)
    console.print(f"data in {root}; target ≤ 60 s and ≤ 2048 MiB for 10,000,000 rows")


if __name__ == "__main__":
    main()
