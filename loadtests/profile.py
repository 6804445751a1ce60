"""Where Vigil's time goes under load: ``python -m loadtests.profile [--duration 20]``.

Starts Vigil as shipped (pinned like the benchmark), drives single-row V1 predictions (or another
scenario) with wrk, records the server with py-spy, and prints the hottest functions by own time
and by inclusive time, and the share of samples per layer (uvicorn, starlette, service, …).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from loadtests import payloads
from loadtests.servers import start_vigil, train_template

console = Console(width=None if sys.stdout.isatty() else 140)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Layers in the order they are matched against a frame's file path.
_LAYERS = (
    ("vigil service", "service/"),
    ("vigil model_store", "model_store/"),
    ("uvicorn / httptools", "uvicorn"),
    ("starlette", "starlette"),
    ("fastapi", "fastapi"),
    ("pydantic", "pydantic"),
    ("onnxruntime", "onnxruntime"),
    ("prometheus_client", "prometheus_client"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow"),
    ("asyncio / uvloop", "asyncio"),
    ("asyncio / uvloop", "uvloop"),
    ("anyio (thread pool)", "anyio"),
)


# Leaf frames of threads that are only waiting; py-spy does not always see them as idle.
_IDLE_LEAVES = frozenset(
    {
        ("_worker", "concurrent/futures/thread.py"),
        ("wait", "threading.py"),
        ("select", "selectors.py"),
    }
)


def _idle(func: str, path: str) -> bool:
    return any(func == f and path.endswith(p) for f, p in _IDLE_LEAVES)


def layer(path: str) -> str:
    # py-spy names project files relative to the working directory (service/...).
    if "site-packages" not in path:
        for name, key in _LAYERS[:2]:
            if path.startswith(key) or f"/{key}" in path:
                return name
    return next((name for name, key in _LAYERS[2:] if key in path), "other / stdlib")


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    return (m["func"], m["file"]) if m else (frame, "")


def _short(func: str, path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def summarise(raw: str, top: int = 20) -> dict[str, object]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    vigil: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_split(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if f[1]]  # drop the "thread (…)" pseudo-frames
        if not frames:
            continue
        if _idle(*frames[-1]):
            idle += count
            continue
        total += count
        own[_short(*frames[-1])] += count
        layers[layer(frames[-1][1])] += count
        for func, path in set(frames):
            inclusive[_short(func, path)] += count
            if layer(path) == "vigil service":
                vigil[_short(func, path)] += count

    def pct(counter: Counter[str], *, inclusive: bool = False) -> list[tuple[str, float]]:
        if inclusive:
            # Frames on nearly every stack (the entry chain down to the server loop) say nothing.
            peak = max(counter.values(), default=0)
            for k in [k for k, v in counter.items() if v >= 0.97 * peak]:
                del counter[k]
        return [(k, 100 * v / total) for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "layers": pct(layers),
        "own": pct(own),
        "inclusive": pct(inclusive, inclusive=True),
        "vigil_inclusive": pct(vigil, inclusive=True),
    }


def render(summary: dict[str, object]) -> None:
    for key, title in (("layers", "own time by layer"), ("own", "hottest functions (own time)"),
                       ("inclusive", "functions including callees"),
                       ("vigil_inclusive", "Vigil's own functions including callees")):  # fmt: skip
        table = Table(title=f"{title}: % of {summary['samples']} samples")
        table.add_column("%", justify="right")
        table.add_column("where")
        for name, share in summary[key]:  # type: ignore[attr-defined]
            table.add_row(f"{share:.1f}", name)
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.profile")
    p.add_argument("--duration", type=int, default=20, help="seconds recorded")
    p.add_argument("--rows", type=int, default=1, help="rows per V1 request")
    p.add_argument("--v2", action="store_true", help="profile V2 infer instead of V1 predict")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        console.print("[red]py-spy not found: pip install py-spy[/]")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw_path, svg_path = args.out / f"profile-{stamp}.txt", args.out / f"profile-{stamp}.svg"
    indices = [i % len(payloads.demo().rows) for i in range(args.rows)]
    with tempfile.TemporaryDirectory(prefix="vigil-profile-") as tmp:
        work = Path(tmp)
        body = work / "body.json"
        body.write_bytes(payloads.v2_body(indices) if args.v2 else payloads.v1_body(indices))
        path = payloads.V2_PATH if args.v2 else payloads.V1_PATH
        server = start_vigil("vigil", train_template(work / "template"), work, cpu="0")
        wrk = subprocess.Popen(
            ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{args.duration + 4}s", "-s",
             str(Path(__file__).with_name("wrk_post.lua")), server.url + path],
            env={"WRK_BODY_FILE": str(body), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(2)  # warm-up before sampling
            with console.status(f"py-spy recording {args.duration}s under wrk load…"):
                for fmt, target in (("raw", raw_path), ("flamegraph", svg_path)):
                    subprocess.run(
                        ["taskset", "-c", "1", pyspy, "record", "--pid", str(server.proc.pid),
                         "--duration", str(args.duration // 2), "--rate", str(args.rate),
                         "--format", fmt, "--output", str(target)],
                        check=True, capture_output=True,
                    )  # fmt: skip
            out, _ = wrk.communicate(timeout=60)
        finally:
            wrk.kill()
            server.stop()
    summary = summarise(raw_path.read_text())
    render(summary)
    (args.out / f"profile-{stamp}.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    rps = next((ln for ln in out.splitlines() if ln.startswith("Requests/sec")), "?")
    console.print(f"{summary['samples']} samples; wrk {rps.strip()}")
    console.print(f"raw stacks {raw_path}, flame graph {svg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
