"""Drift analysis of a 1M-row x 30-feature window: wall time and peak memory.

    python -m loadtests.drift_bench [--rows 1000000] [--labelled 0.1] [--max-rows 50000]

The window is synthetic, drawn from the demo data's distribution (rows sampled with replacement
plus 2 % noise) and shaped like ``read_predictions`` output (ids, timestamps, metadata, labels).
Timed: ``analyse`` (sampling included) and the Evidently HTML report — what a drift run does after
reading its window. Peak RSS is the whole process's, data generation included.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from model_store.demo import DEMO_MODEL, demo_data, train_demo
from model_store.store import ModelStore
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse
from monitoring.drift.html import write_html
from monitoring.drift.result import DriftReport


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synthetic_window(
    reference: pd.DataFrame, rows: int, labelled: float, seed: int
) -> pd.DataFrame:
    x, _, _ = demo_data()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(reference), size=rows)
    values = x.to_numpy()[idx] + rng.normal(size=(rows, x.shape[1])) * (0.02 * x.std().to_numpy())
    window = pd.DataFrame(values, columns=x.columns)
    start = pd.Timestamp(datetime.now(UTC)) - pd.Timedelta(hours=1)
    window.insert(0, "request_id", [f"req-{i:08d}" for i in range(rows)])
    window.insert(1, "row", 0)
    window.insert(2, "received_at", start + pd.to_timedelta(np.arange(rows) * 3.6e6 / rows, "ms"))
    window.insert(3, "model", DEMO_MODEL)
    window.insert(4, "version", 1)
    window.insert(5, "endpoint", "v1_predict")
    window.insert(6, "status", 200)
    window.insert(7, "latency_s", rng.exponential(0.002, size=rows))
    for col in ("prediction", "proba_malignant", "proba_benign"):
        window[col] = reference[col].to_numpy()[idx]
    window["metadata"] = "{}"
    truth = reference["target"].to_numpy()[idx]
    window["label"] = np.where(rng.random(rows) < labelled, truth, None)
    return window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--labelled", type=float, default=0.1, help="share of rows with feedback")
    parser.add_argument("--max-rows", type=int, default=DriftConfig().max_rows)
    parser.add_argument("--out", type=Path, default=None, help="keep drift.html here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(Path(tmp) / "models")
        manifest = train_demo(store)
        reference = pd.read_parquet(store.reference_path(DEMO_MODEL, manifest.version))
        t0 = time.perf_counter()
        window = synthetic_window(reference, args.rows, args.labelled, seed=1)
        generated = time.perf_counter() - t0
        rss_data = peak_rss_mb()
        print(f"window: {len(window):,} rows x {len(manifest.feature_names)} features, "
              f"{window.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas, "
              f"generated in {generated:.1f} s; peak RSS so far {rss_data:.0f} MiB")  # fmt: skip

        cfg = DriftConfig(max_rows=args.max_rows)
        t1 = time.perf_counter()
        result = analyse(window, reference, manifest, cfg)
        t2 = time.perf_counter()
        now = datetime.now(UTC)
        report = DriftReport(
            run_id="bench", model=DEMO_MODEL, since=now, until=now, started_at=now,
            finished_at=now, config=cfg.to_dict(), versions=[result], rows=len(window),
        )  # fmt: skip
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        write_html(report, out / "drift.html")
        t3 = time.perf_counter()

    labelled = result.performance.labelled_rows if result.performance else 0
    print(f"analyse (sample {result.sampled_rows:,} of {result.rows:,}): {t2 - t1:.1f} s; "
          f"Evidently HTML: {t3 - t2:.1f} s; labelled rows {labelled:,}")  # fmt: skip
    print(f"status {result.status.value}: {result.message}")
    total = t3 - t1
    verdict = "OK" if total <= 60 and peak_rss_mb() <= 2048 else "OVER TARGET"
    print(f"drift bench: {args.rows:,} rows in {total:.1f} s, peak RSS {peak_rss_mb():.0f} MiB "
          f"(target ≤ 60 s, ≤ 2048 MiB): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
