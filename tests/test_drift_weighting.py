"""The importance-weighted dataset verdict: the feature the model leans on most, shifted alone by
one SD, is data drift; the one it ignores most is listed but not flagged; clean windows stay
quiet; without importance the plain share rule decides, and says so."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import pytest

from model_store.manifest import Manifest
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse
from monitoring.drift.job import run_drift
from monitoring.drift.result import ColumnDrift
from monitoring.drift.weighting import dataset_verdict, rank
from monitoring.simulate import run_simulation
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer
from tests.test_drift_core import window

CFG = DriftConfig()  # the defaults: rule importance, threshold 0.1


def _ends(manifest: Manifest) -> tuple[str, str]:
    """The demo's most and least important features, read from its passport."""
    assert manifest.feature_importance is not None
    ranked = manifest.feature_importance.ranked()
    return ranked[0][0], ranked[-1][0]


def _shifted(reference: pd.DataFrame, feature: str, seed: int = 7) -> pd.DataFrame:
    w = window(reference, 500, seed)
    w[feature] += reference[feature].std()
    return w


def test_most_important_feature_shifted_one_sd_is_data_drift(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    top, _ = _ends(manifest)
    result = analyse(_shifted(reference, top), reference, manifest, CFG)
    assert result.drifted_features == [top]
    assert result.flags.data_drift and result.verdict is not None
    assert result.verdict.rule == "importance"
    assert result.verdict.weighted_share == pytest.approx(
        manifest.feature_importance.values[top]  # type: ignore[union-attr]
    )
    # Evidently's share rule would have called the same window fine: 1/30 < 0.5
    share = analyse(_shifted(reference, top), reference, manifest, DriftConfig(rule="share"))
    assert not share.flags.data_drift and share.verdict is not None
    assert share.verdict.rule == "share" and share.drifted_features == [top]


def test_least_important_feature_shifted_is_listed_but_not_flagged(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    _, bottom = _ends(manifest)
    result = analyse(_shifted(reference, bottom), reference, manifest, CFG)
    assert result.drifted_features == [bottom] and not result.flags.data_drift
    assert "importance-weighted share" in result.message and bottom in result.message
    ranking = result.to_dict()["drifted_ranking"]
    assert [r["feature"] for r in ranking] == [bottom]


def test_twenty_clean_windows_flag_at_most_once(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    validation = reference[reference["split"] == "validation"]
    flags = 0
    for seed in range(20):
        clean = window(validation, 300, seed)  # held-out rows only, as fresh traffic would be
        flags += analyse(clean, reference, manifest, CFG).flags.data_drift
    assert flags <= 1


def test_drifted_features_are_ordered_by_importance_times_score(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    assert manifest.feature_importance is not None
    ranked = [name for name, share in manifest.feature_importance.ranked() if share > 0]
    chosen = [ranked[-1], ranked[len(ranked) // 2], ranked[0]]
    w = window(reference, 500, 9)
    for f in chosen:
        w[f] += reference[f].std()
    result = analyse(w, reference, manifest, CFG)
    impact = {
        f: manifest.feature_importance.values[f] * result.features[f].score
        for f in result.drifted_features
    }
    assert set(chosen) <= set(result.drifted_features)
    assert result.drifted_features == sorted(impact, key=lambda f: -impact[f])
    assert result.verdict is not None
    assert result.verdict.weighted_share == pytest.approx(
        sum(manifest.feature_importance.values[f] for f in result.drifted_features)
    )


def test_without_importance_the_share_rule_decides_and_says_so(
    reference: pd.DataFrame, manifest: Manifest
) -> None:
    bare = manifest.model_copy(update={"feature_importance": None})
    top, _ = _ends(manifest)
    result = analyse(_shifted(reference, top), reference, bare, CFG)
    assert result.verdict is not None and result.verdict.rule == "share"
    assert "no feature importance" in result.verdict.note
    assert not result.flags.data_drift and result.weighted_share is None
    data = result.to_dict()
    assert data["dataset_rule"]["note"] and data["features"][top]["importance"] is None


def test_rank_without_importance_orders_by_score() -> None:
    d = {
        "a": ColumnDrift(score=0.2, method="wasserstein", threshold=0.1, drifted=True),
        "b": ColumnDrift(score=0.5, method="wasserstein", threshold=0.1, drifted=True),
        "c": ColumnDrift(score=0.05, method="wasserstein", threshold=0.1, drifted=False),
    }
    assert [r.feature for r in rank(d, None)] == ["b", "a"]
    assert [r.feature for r in rank(d, {"a": 0.9, "b": 0.1, "c": 0.0})] == ["a", "b"]
    verdict = dataset_verdict(d, None, DriftConfig(rule="share", drift_share=0.5))
    assert verdict.drifted and verdict.share == pytest.approx(2 / 3)


def test_simulated_shift_of_the_top_feature_is_data_drift_end_to_end(
    vigil_server: Callable[..., VigilServer], settings: Settings, manifest: Manifest
) -> None:
    """The issue's experiment through the real service, log and job: `vigil simulate` shifts
    the model's most important feature by 1 SD; the share rule would say ok, the default says
    data drift and ranks that feature first."""
    top, _ = _ends(manifest)
    server = vigil_server()
    sent = run_simulation(server.url, MODEL, 400, batch=50, drift={top: 1.0}, seed=11)
    assert sent.rows == 400 and sent.errors == 0
    report = run_drift(settings, MODEL)
    (v1,) = report.versions
    assert v1.flags.data_drift and v1.drifted_features[0] == top
    assert v1.verdict is not None and v1.verdict.rule == "importance"
    assert v1.drifted_share is not None and v1.drifted_share < CFG.drift_share
    saved = json.loads((report.directory / "drift.json").read_text())  # type: ignore[operator]
    assert saved["versions"][0]["drifted_ranking"][0]["feature"] == top
    assert saved["flags"]["data_drift"] is True
