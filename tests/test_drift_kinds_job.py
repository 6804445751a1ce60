"""Each demo model end to end: registered, served by a real Vigil, fed by `vigil simulate` (with
feedback), analysed by the drift job from the real I/O log, gauges on a real Pushgateway. A clean
window is not flagged; a shifted one (numeric shift, category mix, new categories, label noise)
is, with the metrics of its task."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from model_store.demo import DIABETES, DIABETES_MIXED, WINE, train_demo_model
from model_store.store import ModelStore
from monitoring.drift.job import run_drift
from monitoring.drift.result import Status
from monitoring.simulate import CategoryShift, Shift, run_simulation
from service.settings import Settings
from tests.servers import VigilServer
from tests.test_drift_job import _gauges, pushgateway  # noqa: F401  (the fixture)

# the shift of each demo: its most important numeric feature by 1.5 SD, and for diabetes-mixed
# also a category mix and a fifth of the rows in a sex never seen in training
SHIFTS: dict[str, dict[str, Shift]] = {
    DIABETES: {"bmi": 1.5},
    WINE: {"proline": 1.5},
    DIABETES_MIXED: {
        "s5": 1.5,
        "age_band": CategoryShift("55+", 0.8),
        "sex": CategoryShift("unknown", 0.2),
    },
}


@pytest.mark.parametrize("name", [DIABETES, WINE, DIABETES_MIXED])
def test_clean_then_shifted_traffic_of_each_demo(
    vigil_server: Callable[..., VigilServer],
    settings: Settings,
    store: ModelStore,
    pushgateway: str,  # noqa: F811
    name: str,
) -> None:
    manifest = train_demo_model(store, name)
    server = vigil_server()
    settings = settings.model_copy(update={"pushgateway_url": pushgateway})
    regression = manifest.task == "regression"

    clean = run_simulation(server.url, name, 300, batch=50, feedback=True, seed=1)
    assert clean.errors == 0 and clean.feedback_errors == 0 and clean.feedback == 300
    first = run_drift(settings, name, html=False)
    (v,) = first.versions
    assert first.status is Status.OK and not v.flags.any(), v.message
    assert v.performance is not None and v.performance.labelled_rows == 300
    assert v.performance.current is not None
    assert set(v.performance.current) == (
        {"mae", "rmse", "r2"} if regression else {"accuracy", "f1_macro"}
    )

    noise = 1.0 if regression else 0.3  # target SDs added, or share of labels moved
    shifted = run_simulation(
        server.url, name, 300, batch=50, feedback=True, seed=2, drift=SHIFTS[name],
        label_noise=noise,
    )  # fmt: skip
    assert shifted.errors == 0 and shifted.feedback == 300
    report = run_drift(settings, name, html=name == DIABETES_MIXED)
    (v,) = report.versions
    assert report.since == first.until and v.rows == 300
    numeric = next(f for f, s in SHIFTS[name].items() if not isinstance(s, CategoryShift))
    assert v.features[numeric].drifted and v.flags.data_drift
    assert v.flags.model_drift, v.message
    saved = json.loads((report.directory / "drift.json").read_text())  # type: ignore[operator]
    version = saved["versions"][0]
    assert version["performance"]["task"] == manifest.task
    gauges = _gauges(httpx.get(pushgateway + "/metrics").text)

    def gauge(series: str, **labels: str) -> float:
        key = frozenset({"model": name, "version": str(manifest.version), **labels}.items())
        return gauges[(series, key)]

    assert gauge("vigil_drift_model_drift") == 1
    if regression:
        assert gauge("vigil_drift_performance", metric="mae") > gauge(
            "vigil_drift_reference_performance", metric="mae"
        )
        assert version["prediction_distribution"]["kind"] == "quantiles"
        assert gauge("vigil_drift_prediction_quantile", quantile="0.5", sample="current") > 0
    else:
        assert version["prediction"]["method"] == "jensenshannon"  # the predicted class
        assert version["estimated_performance"]["estimated"] is not None  # one-vs-rest CBPE
        assert (
            gauge("vigil_drift_prediction_class_share", **{"class": "class_0"}, sample="current")
            >= 0
        )
    if name == DIABETES_MIXED:
        assert {"age_band", "sex"} <= set(v.drifted_features)
        assert version["features"]["sex"]["method"] == "jensenshannon"
        unseen = version["unseen_categories"]["sex"]
        assert 0.1 < unseen["share"] < 0.3 and set(unseen["values"]) == {"unknown"}
        assert gauge("vigil_drift_feature_unseen_share", feature="sex") == pytest.approx(
            unseen["share"]
        )
        html = (report.directory / "drift.html").read_text()  # type: ignore[operator]
        assert "regression quality" in html and "unseen in training" in html
