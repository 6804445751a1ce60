"""Back-test: replay logged inputs of a window on a candidate version and compare.

Classifiers: label agreement, probability differences, and on labelled rows accuracy and macro
F1 (ROC AUC for two classes). Regressors: prediction differences, and on labelled rows (labels
are logged as the float's ``repr``) MAE, RMSE and R².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from model_store.errors import StoreError
from model_store.inputs import as_matrix
from model_store.manifest import PiiPolicy
from model_store.registration import quality, regression_quality
from model_store.store import ModelStore
from service.core.loaded_model import LoadedModel, session_options
from service.errors import InvalidInput
from service.iolog.reader import open_predictions
from service.offline.compare_regression import numbers
from service.settings import Settings

CHUNK_ROWS = 50_000
Progress = Callable[[int, int | None], None]  # rows done, rows in all (None: not known yet)


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
    """Replay the window batch by batch as it streams from the log; only the labelled rows'
    labels and probabilities are kept for the quality metrics."""
    store = ModelStore(settings.model_store)
    cand = LoadedModel.load(store, model, candidate, session_options(0, 1))
    _refuse_pii(store, model, [], cand)
    stream = open_predictions(
        settings, model, since=since, until=until, columns=_columns(store, model, cand)
    )
    tallies: dict[int, _Tally | _RegressionTally] = {}
    done = 0
    for batch in stream:
        logged = batch.to_pandas()
        for v, part in logged.groupby("version", sort=True):
            version = int(v)
            if version not in tallies:
                _refuse_pii(store, model, [version], cand)
                served = store.manifest(model, version)
                if served.is_regression != cand.regression:
                    raise InvalidInput(
                        f"cannot compare v{version} ({served.task}) with v{candidate} "
                        f"({cand.manifest.task}): a back-test compares models of one task"
                    )
                tallies[version] = (
                    _RegressionTally() if cand.regression else _Tally(served.outputs.class_names)
                )
            _replay(tallies[version], version, part, cand)
        done += len(logged)
        if progress:
            progress(done, None)
    return {
        "model": model,
        "candidate_version": candidate,
        "window": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
        "rows": done,
        "per_version": {str(v): tallies[v].report(cand) for v in sorted(tallies)},
    }


def summary_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table ``vigil backtest`` prints (and the console shows): headers and rows of text.
    Classifiers: agreement and accuracy; regressors: prediction differences and MAE."""
    candidate = report["candidate_version"]
    per_version = report["per_version"]
    regression = any("prediction_diff" in r for r in per_version.values())
    metric, diff = ("mae", "prediction_diff") if regression else ("acc", "probability_diff")
    sign = "|Δ prediction|" if regression else "|Δp|"
    headers = ["served version", "rows", *([] if regression else ["label agreement"]),
               f"mean {sign}", f"max {sign}", "labelled", f"served {metric}",
               f"v{candidate} {metric}"]  # fmt: skip
    key = "mae" if regression else "accuracy"
    rows = []
    for v, r in per_version.items():
        sq, cq = r.get("served_quality", {}), r.get("candidate_quality", {})
        agreement = [] if regression else [f"{r['label_agreement']:.4f}"]
        rows.append([
            v, str(r["rows_replayed"]), *agreement,
            f"{r[diff]['mean']:.3g}", f"{r[diff]['max']:.3g}", str(r["labelled_rows"]),
            f"{sq[key]:.4f}" if sq else "-", f"{cq[key]:.4f}" if cq else "-",
        ])  # fmt: skip
    return headers, rows


def _columns(store: ModelStore, model: str, cand: LoadedModel) -> list[str] | None:
    """What the replay reads: the candidate's inputs, what was served, the label."""
    columns = {"version", "prediction", "label", *cand.feature_names}
    columns.update(f"proba_{c}" for c in cand.class_names)
    for v in store.versions(model):
        try:
            columns.update(f"proba_{c}" for c in store.manifest(model, v).outputs.class_names)
        except StoreError:
            return None  # cannot tell what a broken version logs: read everything
    return sorted(columns)


def _replay(
    tally: _Tally | _RegressionTally, version: int, part: pd.DataFrame, cand: LoadedModel
) -> None:
    missing = [f for f in cand.feature_names if f not in part.columns]
    if missing:
        raise InvalidInput(f"v{version} traffic lacks the candidate's feature(s) {missing[:5]}")
    x = as_matrix(part, cand.manifest.features)
    for start in range(0, len(x), CHUNK_ROWS):
        chunk = part.iloc[start : start + CHUNK_ROWS]
        tally.add(chunk, cand, cand.predict(x[start : start + CHUNK_ROWS]))


@dataclass
class _Tally:
    """One served version's comparison, summed batch by batch."""

    served_classes: list[str]
    rows: int = 0
    agreed: int = 0
    diff_sum: float = 0.0
    diff_count: int = 0
    diff_max: float = 0.0
    truth: list[np.ndarray] = field(default_factory=list)  # labelled rows only, below
    served: list[np.ndarray] = field(default_factory=list)
    replayed: list[np.ndarray] = field(default_factory=list)
    served_p: list[np.ndarray] = field(default_factory=list)
    replayed_p: list[np.ndarray] = field(default_factory=list)

    def add(self, part: pd.DataFrame, cand: LoadedModel, pred: Any) -> None:
        cand_labels = cand.class_names_arr[pred.labels]
        cand_proba = pred.probabilities.astype(np.float64)
        served_labels = part["prediction"].to_numpy(dtype=object)
        common = [c for c in cand.class_names if f"proba_{c}" in part.columns]
        diffs = np.abs(
            part[[f"proba_{c}" for c in common]].to_numpy(dtype=np.float64)
            - cand_proba[:, [cand.class_names.index(c) for c in common]]
        )
        self.rows += len(part)
        self.agreed += int(np.sum(served_labels == cand_labels))
        self.diff_sum += float(diffs.sum())
        self.diff_count += diffs.size
        self.diff_max = max(self.diff_max, float(diffs.max(initial=0.0)))
        truth = part["label"].to_numpy(dtype=object) if "label" in part else np.array([])
        has = np.array([t is not None and t == t for t in truth], dtype=bool)
        if has.any():
            index = {c: i for i, c in enumerate(cand.class_names)}
            self.truth.append(np.array([index[t] for t in truth[has]]))
            self.served.append(np.array([index.get(s, -1) for s in served_labels[has]]))
            self.replayed.append(np.array([index[c] for c in cand_labels[has]]))
            probas = [f"proba_{c}" for c in self.served_classes]
            self.served_p.append(part[probas].to_numpy()[has])
            self.replayed_p.append(cand_proba[has])

    def report(self, cand: LoadedModel) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows_replayed": self.rows,
            "label_agreement": self.agreed / self.rows if self.rows else float("nan"),
            "probability_diff": {
                "mean": self.diff_sum / self.diff_count if self.diff_count else float("nan"),
                "max": self.diff_max,
            },
            "labelled_rows": 0,
        }
        if self.truth:
            y = np.concatenate(self.truth)
            out["labelled_rows"] = len(y)
            out["served_quality"] = quality(
                y, np.concatenate(self.served), np.concatenate(self.served_p)
            )
            out["candidate_quality"] = quality(
                y, np.concatenate(self.replayed), np.concatenate(self.replayed_p)
            )
        return out


@dataclass
class _RegressionTally:
    """A regressor's comparison: prediction differences; MAE, RMSE, R² where labelled."""

    rows: int = 0
    diff_sum: float = 0.0
    diff_max: float = 0.0
    truth: list[np.ndarray] = field(default_factory=list)
    served: list[np.ndarray] = field(default_factory=list)
    replayed: list[np.ndarray] = field(default_factory=list)

    def add(self, part: pd.DataFrame, cand: LoadedModel, pred: Any) -> None:
        served = part["prediction"].to_numpy(dtype=np.float64)
        replayed = np.asarray(pred.values, dtype=np.float64)
        diffs = np.abs(served - replayed)
        diffs = diffs[np.isfinite(diffs)]  # a failed shadow row logged no prediction
        self.rows += len(part)
        self.diff_sum += float(diffs.sum())
        self.diff_max = max(self.diff_max, float(diffs.max(initial=0.0)))
        if "label" not in part:
            return
        truth = numbers(part["label"])
        has = np.isfinite(truth) & np.isfinite(served)
        if has.any():
            self.truth.append(truth[has])
            self.served.append(served[has])
            self.replayed.append(replayed[has])

    def report(self, cand: LoadedModel) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows_replayed": self.rows,
            "prediction_diff": {
                "mean": self.diff_sum / self.rows if self.rows else float("nan"),
                "max": self.diff_max,
            },
            "labelled_rows": 0,
        }
        if self.truth:
            y = np.concatenate(self.truth)
            out["labelled_rows"] = len(y)
            out["served_quality"] = regression_quality(y, np.concatenate(self.served))
            out["candidate_quality"] = regression_quality(y, np.concatenate(self.replayed))
        return out
