"""Segments: each value of a metadata key (or categorical feature) analysed on its own, worst
first, small ones reported as insufficient; bad keys refused with a clear message."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from model_store.manifest import Manifest
from model_store.store import ModelStore
from monitoring.drift.config import DriftConfig
from monitoring.drift.job import _analyse_version, run_drift
from monitoring.drift.result import Status
from monitoring.drift.segments import SegmentKeyError, analyse_segments, segment_labels
from monitoring.drift.window import WindowSample
from monitoring.simulate import run_simulation
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer
from tests.test_drift_cbpe import _unsure_window
from tests.test_drift_core import window

CFG = DriftConfig(segment_by="region")


def _tagged(frame: pd.DataFrame, **metadata: str) -> pd.DataFrame:
    return frame.assign(metadata=json.dumps(metadata, separators=(",", ":")))


def _mixed(reference: pd.DataFrame) -> pd.DataFrame:
    """eu: clean traffic; us: traffic moved to where the model is unsure, labels withheld;
    apac: too few rows to judge; and rows that carry no region at all."""
    return pd.concat(
        [
            _tagged(window(reference, 400, seed=1), region="eu", client="a"),
            _tagged(_unsure_window(reference, 400, seed=2).assign(label=None), region="us"),
            _tagged(window(reference, 30, seed=3), region="apac"),
            _tagged(window(reference, 20, seed=4)),
        ],
        ignore_index=True,
    )


def test_the_drifting_segment_comes_first_and_small_ones_are_kept(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    segments = analyse_segments(_mixed(reference), reference, manifest, CFG, "region")
    by_value = {s.value: s for s in segments.segments}
    assert [s.value for s in segments.segments][:2] == ["us", "eu"]
    assert {s.value for s in segments.segments[2:]} == {"apac", "(missing)"}
    us, eu = by_value["us"], by_value["eu"]
    assert us.status is Status.DRIFT and us.flags.estimated_model_drift
    assert eu.status is Status.OK and not eu.flags.any()
    assert us.estimated is not None and eu.estimated is not None
    assert us.estimated["accuracy"] < eu.estimated["accuracy"] - CFG.performance_tolerance
    assert us.rows == 400 and by_value["apac"].rows == 30
    assert by_value["apac"].status is Status.INSUFFICIENT_DATA
    assert "30 rows in the window, 100 needed" in by_value["apac"].message
    data = segments.to_dict()
    assert data["key"] == "region" and data["min_rows"] == CFG.segment_min_rows
    assert data["segments"][0]["value"] == "us"


def test_segments_ride_along_in_the_version_result(
    store: ModelStore, reference: pd.DataFrame
) -> None:
    result = _analyse_version(store, MODEL, 1, _mixed(reference), CFG)
    assert result.segments is not None and result.segments.key == "region"
    assert result.to_dict()["segments"]["segments"][0]["value"] == "us"


def test_unknown_or_numeric_keys_are_refused_clearly(
    store: ModelStore, reference: pd.DataFrame, manifest: Manifest
) -> None:
    w = _mixed(reference)
    with pytest.raises(SegmentKeyError, match=r"neither a feature .* nor a metadata key"):
        segment_labels(w, manifest, "planet")
    with pytest.raises(SegmentKeyError, match=r"'mean_radius' .* is numeric"):
        segment_labels(w, manifest, "mean_radius")
    cfg = DriftConfig(segment_by="planet")
    failed = _analyse_version(store, MODEL, 1, WindowSample.of(w, cfg.max_rows, cfg.seed), cfg)
    assert failed.status is Status.ERROR and "planet" in failed.message


def test_a_categorical_feature_is_a_segment_key(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    specs = [
        f.model_copy(update={"categories": [0.0, 1.0]}) if f.name == "mean_texture" else f
        for f in manifest.features
    ]
    categorical = manifest.model_copy(update={"features": specs})
    w = window(reference, 10, seed=5)
    w["mean_texture"] = [0.0, 1.0] * 5
    assert sorted(segment_labels(w, categorical, "mean_texture").unique()) == ["0", "1"]


def test_segments_end_to_end_through_the_log(
    vigil_server: Callable[..., VigilServer], settings: Settings, manifest: Manifest
) -> None:
    """`vigil simulate --metadata region=…` through the service and I/O log: only the us traffic
    has its most important feature shifted; the job run with a segment key puts us first."""
    assert manifest.feature_importance is not None
    top = manifest.feature_importance.ranked()[0][0]
    server = vigil_server()
    for region, drift, rows in (("eu", {}, 300), ("us", {top: 1.0}, 300), ("apac", {}, 40)):
        sent = run_simulation(
            server.url,
            MODEL,
            rows,
            batch=50,
            drift=drift,
            seed=len(region),
            metadata={"region": region},
        )
        assert sent.errors == 0
    report = run_drift(
        settings, MODEL, cfg=DriftConfig.from_settings(settings, segment_by="region")
    )
    (v1,) = report.versions
    assert v1.segments is not None
    order = [(s.value, s.status) for s in v1.segments.segments]
    assert order == [("us", Status.DRIFT), ("eu", Status.OK), ("apac", Status.INSUFFICIENT_DATA)]
    us = v1.segments.segments[0]
    assert us.flags.data_drift and us.drifted_features[0] == top
    saved = json.loads((report.directory / "drift.json").read_text())  # type: ignore[operator]
    assert [s["value"] for s in saved["versions"][0]["segments"]["segments"]] == [
        "us",
        "eu",
        "apac",
    ]
