"""Drift and estimated performance per segment of the traffic (``--segment-by KEY``).

A whole-window verdict can hide a segment that drifts on its own (one region, one client). KEY
is a metadata key sent with the requests (logged as the ``metadata`` JSON column) or a
categorical feature of the manifest (a string feature of kind ``categorical``, or a numeric one
with allowed ``categories``). Each segment value with at least
``segment_min_rows`` rows is analysed like a window of its own; smaller ones are reported as
``insufficient_data``, not hidden. The version's own flags stay those of the whole window.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import orjson
import pandas as pd

from model_store.manifest import Manifest
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import DriftInputError, analyse
from monitoring.drift.result import SegmentResult, Segments, Status, VersionResult
from monitoring.drift.window import WindowSample

if TYPE_CHECKING:
    from monitoring.drift.reference import ReferenceStats

METADATA_COLUMN = "metadata"
MISSING = "(missing)"  # rows whose request did not carry the key


class SegmentKeyError(DriftInputError):
    """The segment key is neither a categorical feature nor a logged metadata key."""


def _metadata_value(text: object, key: str) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return None if value is None else str(value)


def segment_labels(current: pd.DataFrame, manifest: Manifest, key: str) -> pd.Series:
    """The segment value of every row of ``current``, as text."""
    spec = next((f for f in manifest.features if f.name == key), None)
    if spec is not None:
        if not spec.categories:
            raise SegmentKeyError(
                f"feature {key!r} of {manifest.name} is numeric; segment by a categorical feature "
                "(one with categories in the manifest) or a metadata key"
            )
        if key not in current.columns:
            raise SegmentKeyError(f"feature {key!r} is not in the logged window (PII policy?)")
        if spec.kind == "categorical":
            return current[key].map(lambda v: MISSING if pd.isna(v) else str(v))
        return current[key].map(lambda v: MISSING if pd.isna(v) else f"{v:g}")
    if METADATA_COLUMN in current.columns:
        # one parse per distinct metadata string, not per row
        uniques = pd.Series(current[METADATA_COLUMN].unique())
        values = dict(zip(uniques, uniques.map(lambda t: _metadata_value(t, key)), strict=True))
        labels = current[METADATA_COLUMN].map(values)
        if labels.notna().any():
            return labels.fillna(MISSING)
    names = ", ".join(manifest.feature_names[:3])
    raise SegmentKeyError(
        f"segment key {key!r} is neither a feature of {manifest.name} ({names}, …) nor a metadata "
        "key of any request in the window"
    )


def analyse_segments(
    window: pd.DataFrame | WindowSample,
    reference: pd.DataFrame,
    manifest: Manifest,
    cfg: DriftConfig,
    key: str,
    stats: ReferenceStats | None = None,
) -> Segments:
    """Segments of the window's sample (at most ``drift_max_rows`` rows, gathered while the log
    streamed): a segment's rows, drift and realized accuracy are those of its sampled rows."""
    current = window.sample if isinstance(window, WindowSample) else window
    labels = segment_labels(current, manifest, key)
    seg_cfg = replace(cfg, min_rows=cfg.segment_min_rows)
    results: list[SegmentResult] = []
    for value, rows in labels.value_counts(sort=True).items():
        part = current[labels == value]
        result = analyse(part, reference, manifest, seg_cfg, stats, segment_key=key)
        result.evidence = None  # the HTML report shows the whole window only
        results.append(_summary(str(value), int(rows), result))
    results.sort(key=_worst_first)
    return Segments(key=key, min_rows=cfg.segment_min_rows, segments=results)


def _summary(value: str, rows: int, r: VersionResult) -> SegmentResult:
    est = r.estimate
    perf = r.performance
    return SegmentResult(
        value=value,
        rows=rows,
        status=r.status,
        flags=r.flags,
        drifted_share=r.drifted_share,
        weighted_share=r.weighted_share,
        drifted_features=r.drifted_features,
        estimated=None if est is None else est.estimated,
        estimate_band=None if est is None else est.band,
        realized=None if perf is None else perf.current,
        message=r.message,
    )


_RANK = {Status.DRIFT: 0, Status.OK: 1, Status.ERROR: 2, Status.INSUFFICIENT_DATA: 3}


def _worst_first(s: SegmentResult) -> tuple[int, float, float, str]:
    """Drifting segments first, then by lowest estimated accuracy, highest weighted share;
    too small segments last (reported, not hidden)."""
    accuracy = 1.0 if s.estimated is None else s.estimated.get("accuracy", 1.0)
    weighted = s.weighted_share if s.weighted_share is not None else (s.drifted_share or 0.0)
    return (_RANK[s.status], accuracy, -weighted, s.value)
