"""The Drift page: runs from the index, per-feature scores from each run's drift.json read
against their thresholds, insufficient-data runs shown as such, and report files served only
for runs the index names."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from monitoring.drift.job import run_drift
from service.settings import Settings
from service.ui.drift import MAX_STRENGTH, drift_view, strength
from tests.conftest import MODEL


@pytest.mark.parametrize(
    ("score", "threshold", "drifted", "expected"),
    [
        (0.01, 0.05, True, 5.0),  # a p-value under its threshold: drifted, 5x
        (0.5, 0.05, False, 0.1),  # a p-value well above: not drifted
        (0.3, 0.1, True, 3.0),  # a distance above its threshold: drifted
        (0.05, 0.1, False, 0.5),  # a distance under it
        (0.0, 0.05, True, MAX_STRENGTH),  # capped
    ],
)
def test_strength_reads_a_score_the_way_its_verdict_says(
    score: float, threshold: float, drifted: bool, expected: float
) -> None:
    value = strength(score, threshold, drifted)
    assert value is not None and value == pytest.approx(expected) and (value >= 1) == drifted


def test_drift_page_lists_runs_and_the_heat_map_of_the_analysed_one(
    client: TestClient, settings: Settings, rows: list[dict[str, float]]
) -> None:
    for i in range(0, 150, 3):
        r = client.post(f"/v1/models/{MODEL}/predict", json={"instances": rows[i : i + 3]})
        assert r.status_code == 200
    analysed = run_drift(settings, MODEL, html=False)
    empty = run_drift(settings, MODEL, html=False)  # nothing since the last run
    assert analysed.status.value in ("ok", "drift") and empty.status.value == "insufficient_data"
    view = drift_view(settings, MODEL)
    assert [r["run_id"] for r in view.runs] == [analysed.run_id, empty.run_id]
    assert view.heat_runs == [analysed.run_id]  # a run without analysis has no column
    assert len(view.features) == 30 and all(len(row) == 1 for row in view.heat)
    report = json.loads((analysed.directory / "drift.json").read_text())  # type: ignore[operator]
    features = report["versions"][0]["features"]
    drifted = {n for n, d in features.items() if d["drifted"]}
    heat = dict(zip(view.features, (row[0] for row in view.heat), strict=True))
    assert {n for n, v in heat.items() if v is not None and v >= 1} == drifted

    page = client.get(f"/ui/models/{MODEL}/drift")
    assert page.status_code == 200
    assert page.text.count('<span class="status insufficient_data">insufficient data</span>') == 1
    assert f"/drift/{analysed.run_id}/drift.json" in page.text
    assert f"/drift/{analysed.run_id}/drift.html" not in page.text  # written without HTML
    served = client.get(f"/ui/models/{MODEL}/drift/{analysed.run_id}/drift.json")
    assert served.status_code == 200 and served.json()["run_id"] == analysed.run_id
    missing = client.get(f"/ui/models/{MODEL}/drift/{analysed.run_id}/drift.html")
    assert missing.status_code == 404 and "pruned or not written" in missing.text
