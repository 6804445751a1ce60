"""The soak script, shortened for CI: mixed traffic with promotions and rollbacks, within bounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_soak_holds_its_bounds(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # The drift job is left out here to stay within CI's time: it alone takes 20-50 s on 2 cores.
    cmd = [
        sys.executable, "-m", "loadtests.soak", "--duration", "18", "--window", "3",
        "--promote-every", "3", "--users", "10", "--segment-seconds", "1", "--no-drift",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())

    assert doc["unexpected_errors"] == 0, doc["errors"]
    assert doc["requests"] > 200, output
    assert doc["rss"]["growth"] <= 0.10, doc["rss"]
    assert proc.returncode == 0, output
    assert len(doc["windows"]) >= 5
    assert all(w["requests"] > 0 and w["p99_ms"] > 0 for w in doc["windows"][:-1])
    actions = doc["actions"]
    assert [a["action"] for a in actions[:2]] == ["promote v2", "rollback"], actions
    assert all(a["status"] == 200 for a in actions), actions
    # Each promote/rollback took effect for the predictions that followed it.
    assert [a["served_after"] for a in actions] == [2, 1] * (len(actions) // 2) + [2] * (
        len(actions) % 2
    )
