"""A bounded soak: ``python -m loadtests.soak [--duration 600]`` (loopback only).

Mixed locust traffic (V1, V2, batches, feedback, bad requests) against a fresh Vigil, with
promotions and rollbacks through the admin API during the load and a drift run in the middle.
Reports unexpected errors (bound: 0), p99 per window and RSS over time (bound: growth after
warm-up ≤ 10 %); exits 1 when a bound is violated. Writes the figures as JSON too.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from loadtests import payloads
from loadtests.servers import ROOT, Server, start_vigil, train_template

console = Console(width=None if sys.stdout.isatty() else 120)
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass
class Events:
    """What the soak did besides the traffic, and what went wrong with it."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    drift: dict[str, Any] | None = None


def _served_version(client: httpx.Client) -> int:
    r = client.post(
        payloads.V1_PATH,
        content=payloads.v1_body([0]),
        headers={"Content-Type": "application/json"},
    )
    r.raise_for_status()
    return int(r.json()["version"])


def _admin(client: httpx.Client, events: Events, t: float, promote: bool) -> None:
    model = payloads.MODEL
    if promote:
        r = client.post(f"/v1/admin/models/{model}/promote", json={"version": 2})
    else:
        r = client.post(f"/v1/admin/models/{model}/rollback")
    expected = 2 if promote else 1
    action = {
        "t_s": round(t, 1),
        "action": "promote v2" if promote else "rollback",
        "status": r.status_code,
    }
    events.actions.append(action)
    if r.status_code != 200:
        events.errors.append(f"{action['action']} at {t:.0f}s: {r.status_code} {r.text[:200]}")
        return
    served = _served_version(client)
    action["served_after"] = served
    if served != expected:
        events.errors.append(f"{action['action']} at {t:.0f}s: predictions still from v{served}")


def _drift(server: Server, out: Path, events: Events, t: float) -> None:
    if importlib.util.find_spec("service.cli.monitoring") is None:
        console.print(
            "[yellow]warning:[/] service.cli.monitoring is missing; the drift run is skipped"
        )
        events.drift = {"t_s": round(t, 1), "skipped": "service.cli.monitoring is missing"}
        return
    assert server.home is not None
    env = {
        **os.environ,
        "VIGIL_MODEL_STORE": str(server.home / "models"),
        "VIGIL_DATA_DIR": str(server.home / "data"),
    }
    cmd = [
        sys.executable,
        "-m",
        "service.cli.monitoring",
        "drift",
        "run",
        "--model",
        payloads.MODEL,
        "--out",
        str(out),
    ]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    events.drift = {
        "t_s": round(t, 1),
        "rc": proc.returncode,
        "seconds": round(time.monotonic() - started, 1),
    }
    if proc.returncode != 0:
        events.errors.append(
            f"drift run exited {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}"
        )


def _operate(
    server: Server, args: argparse.Namespace, events: Events, workdir: Path, stop: threading.Event
) -> None:
    """Promote, roll back and run the drift job while locust drives the traffic."""
    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {args.token}"}
    drift_thread: threading.Thread | None = None
    promote = True
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        next_admin = args.promote_every
        while not stop.wait(0.5):
            t = time.monotonic() - t0
            if t >= args.duration - 2:
                break
            if args.drift and drift_thread is None and t >= args.duration / 2:
                drift_thread = threading.Thread(
                    target=_drift, args=(server, workdir / "drift", events, t)
                )
                drift_thread.start()
            if t >= next_admin:
                try:
                    _admin(client, events, t, promote)
                except httpx.HTTPError as exc:
                    events.errors.append(f"admin call at {t:.0f}s failed: {exc!r}")
                promote = not promote
                next_admin += args.promote_every
    if drift_thread is not None:
        drift_thread.join()


def _locust(server: Server, args: argparse.Namespace, workdir: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "VIGIL_LOAD_TIMELINE": str(workdir / "timeline.json"),
        "VIGIL_LOAD_WINDOW_S": str(args.window),
        "VIGIL_LOAD_WAIT_MIN": "0.05",
        "VIGIL_LOAD_WAIT_MAX": "0.3",
    }
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s",
        "--stop-timeout", "10", "--host", server.url, "--csv", str(workdir / "soak"),
        "--only-summary",
    ]  # fmt: skip
    log = (workdir / "locust.log").open("w")
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)


def _rss(samples: list[tuple[float, int]], args: argparse.Namespace) -> dict[str, Any]:
    # Warm-up covers one promote and one rollback, so that both versions are loaded by then.
    default = max(min(60.0, args.duration / 4), 2 * args.promote_every + 1)
    warmup = args.warmup if args.warmup is not None else default
    end = max(t for t, _ in samples)

    def median_mb(lo: float, hi: float) -> float:
        values = [rss for t, rss in samples if lo <= t < hi] or [samples[-1][1]]
        return statistics.median(values) / 2**20

    baseline = median_mb(warmup, warmup + args.window)
    final = median_mb(end - args.window, end + 1)
    per_window: dict[int, float] = {}
    for t, rss in samples:
        w = int(t // args.window)
        per_window[w] = max(per_window.get(w, 0.0), rss / 2**20)
    return {
        "warmup_s": warmup,
        "baseline_mb": baseline,
        "final_mb": final,
        "peak_mb": max(rss for _, rss in samples) / 2**20,
        "growth": final / baseline - 1,
        "per_window_mb": [per_window[w] for w in sorted(per_window)],
    }


def _stats(workdir: Path) -> tuple[int, int, list[dict[str, str]]]:
    with (workdir / "soak_stats.csv").open() as f:
        total = next(row for row in csv.DictReader(f) if row["Name"] == "Aggregated")
    with (workdir / "soak_failures.csv").open() as f:
        failures = list(csv.DictReader(f))
    return int(total["Request Count"]), int(total["Failure Count"]), failures


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with console.status("training the demo models (v1 production, v2 candidate)…"):
        template = train_template(workdir / "template")
        settings = {"VIGIL_ADMIN_TOKEN": args.token}
        if args.segment_seconds is not None:
            settings["VIGIL_SPOOL_SEGMENT_SECONDS"] = str(args.segment_seconds)
        server = start_vigil("soak", template, workdir, settings)
    events, stop = Events(), threading.Event()
    try:
        locust = _locust(server, args, workdir)
        with console.status(f"soaking for {args.duration}s: mixed traffic, promotions, drift run…"):
            _operate(server, args, events, workdir, stop)
            rc = locust.wait(timeout=args.duration + 120)
        alive = server.proc.poll() is None
    finally:
        stop.set()
        server.stop()
    assert server.sampler is not None
    requests, failed, failures = _stats(workdir)
    timeline = orjson.loads((workdir / "timeline.json").read_bytes())
    errors = list(events.errors)
    errors += [f"{f['Occurrences']}x {f['Name']}: {f['Error'][:200]}" for f in failures]
    if rc not in (0, 1):  # locust exits 1 when a request failed; those are counted above
        errors.append(f"locust exited {rc}; see {workdir / 'locust.log'}")
    if not alive:
        errors.append("the server died during the soak")
    log = server.log_tail(10**8)
    tracebacks = log.count("Traceback")
    if tracebacks:
        first = log[log.index("Traceback") :].split("\n\n", 1)[0]
        errors.append(f"{tracebacks} traceback(s) in the server log; the first:\n{first[-1500:]}")
    return {
        "duration_s": args.duration,
        "users": args.users,
        "requests": requests,
        "failed_requests": failed,
        "unexpected_errors": len(errors)
        + max(0, failed - sum(int(f["Occurrences"]) for f in failures)),
        "errors": errors,
        "actions": events.actions,
        "drift": events.drift,
        "windows": timeline["windows"],
        "rss": _rss(server.sampler.samples, args),
    }


def render(doc: dict[str, Any], window_s: float) -> None:
    table = Table(
        title=f"soak: {doc['requests']:,} requests in {doc['duration_s']}s, {window_s:g}-s windows"
    )
    for col in (
        "from s",
        "requests",
        "failures",
        "p50 ms",
        "p99 ms",
        "p99 1-row ms",
        "peak RSS MB",
    ):
        table.add_column(col, justify="right")
    rss = doc["rss"]["per_window_mb"]
    for i, w in enumerate(doc["windows"]):
        single = w["p99_single_row_ms"]
        table.add_row(
            f"{w['start_s']:g}", f"{w['requests']:,}", str(w["failures"]), f"{w['p50_ms']:.1f}",
            f"{w['p99_ms']:.1f}", "-" if single is None else f"{single:.1f}",
            f"{rss[i]:.0f}" if i < len(rss) else "-",
        )  # fmt: skip
    console.print(table)
    for action in doc["actions"]:
        served = action.get("served_after", "?")
        console.print(f"  {action['t_s']:>6}s {action['action']}: {action['status']} → v{served}")
    console.print(f"  drift run: {doc['drift']}")
    for error in doc["errors"]:
        console.print(f"  [red]unexpected:[/] {error}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.soak")
    p.add_argument("--duration", type=int, default=600, help="seconds of load")
    p.add_argument("--users", type=int, default=20, help="locust users")
    p.add_argument("--window", type=float, default=10.0, help="seconds per reporting window")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the RSS baseline (default: a quarter of the run, at most 60, "
        "and at least one promote/rollback cycle)",
    )
    p.add_argument(
        "--promote-every", type=float, default=30.0, help="seconds between promote/rollback"
    )
    p.add_argument(
        "--drift",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the drift job in the middle",
    )
    p.add_argument(
        "--segment-seconds",
        type=float,
        default=None,
        help="VIGIL_SPOOL_SEGMENT_SECONDS for the server; short runs lower it so that the first "
        "compaction into the log store (which imports pyarrow once) falls inside the warm-up",
    )
    p.add_argument("--max-rss-growth", type=float, default=0.10)
    p.add_argument(
        "--max-p99-ms", type=float, default=None, help="optional bound on every window's p99"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="JSON results (default loadtests/results/)"
    )
    args = p.parse_args(argv)
    args.token = secrets.token_urlsafe(24)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = (
        args.out
        or Path(__file__).with_name("results") / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    )
    with tempfile.TemporaryDirectory(prefix="vigil-soak-") as tmp:
        doc = run(args, Path(tmp))
    render(doc, args.window)
    violations = []
    if doc["unexpected_errors"]:
        violations.append(f"{doc['unexpected_errors']} unexpected error(s)")
    if doc["rss"]["growth"] > args.max_rss_growth:
        violations.append(
            f"RSS grew {doc['rss']['growth']:.1%} after warm-up (bound {args.max_rss_growth:.0%})"
        )
    worst = max(w["p99_ms"] for w in doc["windows"])
    if args.max_p99_ms is not None and worst > args.max_p99_ms:
        violations.append(f"worst window p99 {worst:.0f} ms > {args.max_p99_ms:g} ms")
    doc["violations"] = violations
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    rss = doc["rss"]
    console.print(
        f"{'FAILED' if violations else 'OK'}: {doc['requests']:,} requests, "
        f"{doc['unexpected_errors']} unexpected errors, worst p99 {worst:.0f} ms, "
        f"RSS {rss['baseline_mb']:.0f} → {rss['final_mb']:.0f} MB ({rss['growth']:+.1%}), "
        f"{len(doc['actions'])} promote/rollback; {'; '.join(violations) or 'all bounds held'}; "
        f"results in {out}"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
