"""The dataset verdict: which share of the features drifted, plainly or weighted by importance.

Evidently's rule (``share``) counts features alike, so one decisive feature in thirty moves the
share by 1/30 and never reaches 0.5. The ``importance`` rule adds up the permutation importance
(manifest ``feature_importance``, summing to 1) of the drifted features instead: the share of the
model's reliance on its inputs that now sees a different distribution. Importance of features
that could not be compared (PII, not logged) is not redistributed: what cannot be watched does
not make the others count more.
"""

from __future__ import annotations

from collections.abc import Mapping

from model_store.manifest import FeatureImportance
from monitoring.drift.config import DriftConfig
from monitoring.drift.result import ColumnDrift, DatasetVerdict, RankedFeature

SHARE = "share"
IMPORTANCE = "importance"


def rank(
    drift: Mapping[str, ColumnDrift], importance: Mapping[str, float] | None
) -> list[RankedFeature]:
    """Drifted features, most consequential first: importance times drift score (score alone when
    there is no importance), ties by name so that reports are reproducible."""
    ranked = [
        RankedFeature(
            feature=name,
            score=d.score,
            importance=None if importance is None else importance.get(name, 0.0),
        )
        for name, d in drift.items()
        if d.drifted
    ]
    return sorted(ranked, key=lambda r: (-r.impact, r.feature))


def dataset_verdict(
    drift: Mapping[str, ColumnDrift], importance: FeatureImportance | None, cfg: DriftConfig
) -> DatasetVerdict:
    weights = None if importance is None else importance.values
    ranking = rank(drift, weights)
    share = len(ranking) / len(drift)
    weighted = None if weights is None else sum((weights.get(r.feature, 0.0) for r in ranking), 0.0)
    note = ""
    rule = cfg.rule
    if rule == IMPORTANCE and weighted is None:
        rule = SHARE
        note = (
            "the manifest records no feature importance: the plain share rule decided "
            "(register the version with labelled data to weigh features)"
        )
    if rule == IMPORTANCE:
        assert weighted is not None
        drifted, threshold = weighted >= cfg.importance_threshold, cfg.importance_threshold
    else:
        drifted, threshold = share >= cfg.drift_share, cfg.drift_share
    return DatasetVerdict(
        rule=rule,
        drifted=drifted,
        share=share,
        weighted_share=weighted,
        threshold=threshold,
        ranking=ranking,
        note=note,
        importance=None if weights is None else dict(weights),
    )
