"""Back-test: replay logged inputs of a window on a candidate version and compare."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from model_store.manifest import PiiPolicy
from model_store.registration import quality
from model_store.store import ModelStore
from service.core.loaded_model import LoadedModel, session_options
from service.errors import InvalidInput
from service.iolog.reader import read_predictions
from service.settings import Settings

CHUNK_ROWS = 50_000
Progress = Callable[[int, int], None]


def _refuse_pii(store: ModelStore, model: str, versions: list[int], candidate: LoadedModel) -> None:
    for v in {*versions, candidate.version}:
        manifest = store.manifest(model, v)
        masked = [f.name for f in manifest.features if f.pii in (PiiPolicy.DROP, PiiPolicy.HASH)]
        if masked:
            raise InvalidInput(
                f"cannot replay {model}: v{v} logs feature(s) {', '.join(masked)} hashed or "
                "dropped by its PII policy, so the original inputs are not in the log"
            )


def backtest(
    settings: Settings,
    model: str,
    candidate: int,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    store = ModelStore(settings.model_store)
    cand = LoadedModel.load(store, model, candidate, session_options(0, 1))
    logged = read_predictions(settings, model, since=since, until=until)
    versions = sorted(int(v) for v in logged["version"].unique()) if len(logged) else []
    _refuse_pii(store, model, versions, cand)
    report: dict[str, Any] = {
        "model": model,
        "candidate_version": candidate,
        "window": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
        "rows": len(logged),
        "per_version": {},
    }
    done = 0
    for v in versions:
        part = logged[logged["version"] == v]
        served = store.manifest(model, v)
        missing = [f for f in cand.feature_names if f not in part.columns]
        if missing:
            raise InvalidInput(f"v{v} traffic lacks the candidate's feature(s) {missing[:5]}")
        x = part[list(cand.feature_names)].to_numpy(dtype=np.float64)
        labels: list[np.ndarray] = []
        probas: list[np.ndarray] = []
        for start in range(0, len(x), CHUNK_ROWS):
            pred = cand.predict(x[start : start + CHUNK_ROWS])
            labels.append(pred.labels)
            probas.append(pred.probabilities)
            done += min(CHUNK_ROWS, len(x) - start)
            if progress:
                progress(done, len(logged))
        report["per_version"][str(v)] = _compare(
            part, served.outputs.class_names, cand, labels, probas
        )
    return report


def _compare(
    part: pd.DataFrame,
    served_classes: list[str],
    cand: LoadedModel,
    labels: list[np.ndarray],
    probas: list[np.ndarray],
) -> dict[str, Any]:
    cand_labels = cand.class_names_arr[np.concatenate(labels)]
    cand_proba = np.concatenate(probas).astype(np.float64)
    served_labels = part["prediction"].to_numpy(dtype=object)
    common = [c for c in cand.class_names if f"proba_{c}" in part.columns]
    diffs = np.abs(
        part[[f"proba_{c}" for c in common]].to_numpy(dtype=np.float64)
        - cand_proba[:, [cand.class_names.index(c) for c in common]]
    )
    out: dict[str, Any] = {
        "rows_replayed": len(part),
        "label_agreement": float(np.mean(served_labels == cand_labels)),
        "probability_diff": {"mean": float(diffs.mean()), "max": float(diffs.max())},
        "labelled_rows": 0,
    }
    truth = part["label"].to_numpy(dtype=object) if "label" in part else np.array([])
    has = np.array([t is not None and t == t for t in truth], dtype=bool)
    if has.any():
        index = {c: i for i, c in enumerate(cand.class_names)}
        y = np.array([index[t] for t in truth[has]])
        served_idx = np.array([index.get(s, -1) for s in served_labels[has]])
        cand_idx = np.array([index[c] for c in cand_labels[has]])
        served_p = part[[f"proba_{c}" for c in served_classes]].to_numpy()[has]
        out["labelled_rows"] = int(has.sum())
        out["served_quality"] = quality(y, served_idx, served_p)
        out["candidate_quality"] = quality(y, cand_idx, cand_proba[has])
    return out
