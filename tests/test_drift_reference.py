"""Reference statistics are computed once, kept beside the reference and reused; a missing,
unreadable or foreign cache is recomputed, and results with the cache equal results without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_store.manifest import Manifest
from model_store.store import ModelStore
from monitoring.drift import cbpe
from monitoring.drift.columns import Watched
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import analyse
from monitoring.drift.reference import (
    STATS_FILE,
    Reference,
    ReferenceStats,
    load_reference,
)
from tests.conftest import MODEL
from tests.test_drift_core import flip, window

CFG = DriftConfig()


@pytest.fixture
def manifest(store: ModelStore) -> Manifest:
    return store.manifest(MODEL, 1)


def _load(store: ModelStore, manifest: Manifest) -> Reference:
    return load_reference(store, MODEL, 1, Watched.of(manifest), CFG.seed)


def _cache(store: ModelStore) -> Path:
    return store.version_dir(MODEL, 1) / STATS_FILE


def _no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> ReferenceStats:
        raise AssertionError("reference statistics recomputed although cached")

    monkeypatch.setattr(ReferenceStats, "compute", refuse)


def test_first_use_writes_the_cache_and_the_next_reads_it(
    store: ModelStore, manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not _cache(store).exists()
    first = _load(store, manifest)
    assert _cache(store).is_file()
    _no_compute(monkeypatch)
    second = _load(store, manifest)
    assert second.stats.to_json() == first.stats.to_json()
    pd.testing.assert_frame_equal(second.frame, first.frame)


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"format": 1}', b"[1, 2]"])
def test_an_unreadable_cache_is_recomputed_and_replaced(
    store: ModelStore, manifest: Manifest, garbage: bytes
) -> None:
    fresh = _load(store, manifest).stats
    _cache(store).write_bytes(garbage)
    again = _load(store, manifest).stats
    assert again.to_json() == fresh.to_json()
    assert json.loads(_cache(store).read_bytes()) == fresh.to_json()


def test_a_cache_of_another_reference_is_ignored(store: ModelStore, manifest: Manifest) -> None:
    fresh = _load(store, manifest).stats
    foreign = fresh.to_json() | {"sha256": "0" * 64, "quality": {"accuracy": 0.0, "f1_macro": 0.0}}
    _cache(store).write_text(json.dumps(foreign))
    again = _load(store, manifest).stats
    assert again.quality == fresh.quality and again.sha256 == fresh.sha256
    assert json.loads(_cache(store).read_bytes())["sha256"] == fresh.sha256


def test_a_changed_reference_is_not_judged_by_the_old_cache(
    store: ModelStore, manifest: Manifest
) -> None:
    old = _load(store, manifest).stats
    path = store.reference_path(MODEL, 1)
    reference = pd.read_parquet(path)
    reference["mean_radius"] = np.nan  # no finite value left: the feature must be skipped
    reference.to_parquet(path)
    new = _load(store, manifest).stats
    assert new.sha256 != old.sha256
    assert "mean_radius" in old.finite and "mean_radius" not in new.finite


def test_calibration_survives_the_round_trip_exactly() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 1, 2000)
    y = (rng.random(2000) < truth).astype(np.int64)
    overconfident = np.where(truth > 0.5, truth**0.2, truth**5)
    calibrator = cbpe.fit_calibrator(overconfident, y)
    assert calibrator.isotonic is not None
    stats = ReferenceStats(
        sha256="a" * 64,
        classes=("benign", "malignant"),
        seed=0,
        finite=frozenset({"x"}),
        quality={"accuracy": 0.9, "f1_macro": 0.8},
        calibration=cbpe.Calibration(calibrator, 2000, {"accuracy": 0.7, "f1_macro": 0.6}),
    )
    back = ReferenceStats.from_json(json.loads(json.dumps(stats.to_json())))
    assert isinstance(back.calibration, cbpe.Calibration)
    np.testing.assert_array_equal(back.calibration.calibrator(truth), calibrator(truth))
    assert back.to_json() == stats.to_json()


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_results_with_cached_statistics_equal_results_without(
    store: ModelStore, manifest: Manifest, shift: float
) -> None:
    _load(store, manifest)  # writes the cache
    cached = _load(store, manifest)  # reads it
    w = window(cached.frame, 2000, seed=3)
    w["mean_radius"] += shift * cached.frame["mean_radius"].std()
    w["label"] = flip(w["label"], 0.3 * shift, seed=4)
    without = analyse(w, cached.frame, manifest, CFG)
    with_cache = analyse(w, cached.frame, manifest, CFG, cached.stats)
    assert with_cache.to_dict() == without.to_dict()
    assert with_cache.estimate is not None and with_cache.estimate.estimated is not None


def test_a_read_only_store_is_analysed_without_a_cache(
    store: ModelStore, manifest: Manifest, read_only_store: Path
) -> None:
    ref = _load(store, manifest)  # the store is a real read-only mount: the cache cannot be written
    assert not _cache(store).exists()
    assert "mean_radius" in ref.stats.finite
