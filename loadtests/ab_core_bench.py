"""A/B of the serving core between two checkouts, in CPU time per request, without HTTP.

``python -m loadtests.ab_core_bench --a /work/main --b . [--rounds 6] [--model breast-cancer]``

Each round runs one fresh process per checkout (alternating A, B, A, B, …, so that a noisy
neighbour hits both alike): that checkout's own ``loadtests.rollout_core_bench --variants none``,
which trains the demo model with that checkout's code and sends 32 concurrent single-row V1
predictions at a time through ``DataPlane.predict_v1`` with the spool on, reporting the CPU time
of the whole process (every thread: the spool's writer too) per request, best of its rounds.
CPU time is what a shared machine disturbs least. Both checkouts need a ``rollout_core_bench``
with ``--variants`` and ``--model``; ``--b-only`` measures just B (a figure, no A/B).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

_FIGURE = re.compile(r"^\s*none:\s*([0-9.]+) us/request", re.MULTILINE)


def _measure(tree: Path, model: str, rounds: int) -> float:
    """CPU µs per request of ``tree``'s serving core: its own ``rollout_core_bench``, no
    rollout, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.rollout_core_bench", "--variants", "none",
         "--model", model, "--rounds", str(rounds)],
        cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    found = _FIGURE.search(out)
    if found is None:
        raise SystemExit(f"{tree}: rollout_core_bench printed no figure:\n{out}")
    return float(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=Path("/work/main"))
    parser.add_argument("--b", type=Path, default=Path.cwd())
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--core-rounds", type=int, default=10, help="rounds inside each process")
    parser.add_argument("--model", default="breast-cancer")
    parser.add_argument("--b-only", action="store_true")
    args = parser.parse_args()
    sides = (
        {"B": args.b.resolve()} if args.b_only else {"A": args.a.resolve(), "B": args.b.resolve()}
    )
    runs: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(args.rounds):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for key in order:
            runs[key].append(_measure(sides[key], args.model, args.core_rounds))
    print(f"model {args.model}, {args.rounds} rounds; µs per single-row V1 request")
    for key, tree in sides.items():
        cpu = runs[key]
        print(f"{key} {tree}: CPU min {min(cpu):.1f} median {statistics.median(cpu):.1f}")
    if not args.b_only:
        a = statistics.median(runs["A"])
        b = statistics.median(runs["B"])
        print(f"B/A CPU (median): {b / a:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
