"""Permutation feature importance of a registered model, measured on the ONNX model itself.

The ONNX model is what is served, so its importance is the one drift should be weighed by; it also
makes a scikit-learn registration and an ONNX-only one use the same code. scikit-learn's
``permutation_importance`` shuffles one column at a time (seeded) and records how much the score
falls; the falls are clipped at 0 (a shuffle that helps is noise, not negative reliance) and
normalised to sum to 1, so they read as "share of the model's reliance on its inputs".
Classifiers are scored by log-loss, regressors by mean squared error; a model with categorical
features is fed one input per column (``model_store.inputs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.inspection import permutation_importance
from sklearn.metrics import log_loss, mean_squared_error

from model_store.errors import RegistrationError
from model_store.inputs import Column, feed
from model_store.manifest import FeatureImportance

METHOD = "permutation"
# Log-loss rather than accuracy: on a few hundred held-out rows accuracy moves in steps of one row
# and most shuffles change no label, while log-loss sees every change of confidence.
SCORING = "neg_log_loss"
REGRESSION_SCORING = "neg_mean_squared_error"
N_REPEATS = 10
SEED = 0


class _OnnxProba:
    """Just enough of an estimator for ``permutation_importance``: probabilities from ONNX."""

    def __init__(self, onnx_bytes: bytes, columns: Sequence[Column]) -> None:
        self._sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self._name = self._sess.get_inputs()[0].name
        types = {i.type for i in self._sess.get_inputs()}
        self._dtype = np.float64 if "tensor(double)" in types else np.float32
        self._columns = columns

    def fit(self, *_: Any) -> _OnnxProba:  # sklearn checks that an estimator has one
        return self

    def _outputs(self, x: np.ndarray) -> list[Any]:
        out: list[Any] = self._sess.run(
            None, feed(np.asarray(x), self._columns, self._name, self._dtype)
        )
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        values: np.ndarray = np.asarray(self._outputs(x)[0], dtype=np.float64).reshape(len(x))
        return values

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = self._outputs(x)
        proba = np.clip(np.asarray(out[-1], dtype=np.float64), 0.0, None)
        # float32 outputs sum to 1 only within rounding, which log_loss warns about
        normalised: np.ndarray = proba / proba.sum(axis=1, keepdims=True)
        return normalised


def _neg_mse(model: _OnnxProba, x: np.ndarray, y: np.ndarray) -> float:
    return -float(mean_squared_error(y, model.predict(x)))


def _neg_log_loss(n_classes: int) -> Any:
    labels = list(range(n_classes))

    def score(model: _OnnxProba, x: np.ndarray, y: np.ndarray) -> float:
        return -float(log_loss(y, model.predict_proba(x), labels=labels))

    return score


def feature_importance(
    onnx_bytes: bytes,
    x: np.ndarray,
    y_idx: np.ndarray,
    feature_names: list[str],
    n_classes: int,
    *,
    data: str,
    columns: Sequence[Column] | None = None,
) -> FeatureImportance:
    """Normalised permutation importance of each feature on rows ``x`` with class indices ``y_idx``
    (``n_classes`` 0: a regressor, ``y_idx`` its numeric target). ``columns``: the features by
    kind when the model takes one input per column.

    ``data`` says which rows were used (recorded in the manifest). Deterministic: a fixed seed and
    one process, so two registrations of the same model store the same values.
    """
    regression = n_classes == 0
    if len(x) < 2 or (not regression and len(np.unique(y_idx)) < 2):
        raise RegistrationError("feature importance needs labelled rows of at least two classes")
    cols = columns or [Column(n, "numeric") for n in feature_names]
    result = permutation_importance(
        _OnnxProba(onnx_bytes, cols),
        x,
        y_idx,
        scoring=_neg_mse if regression else _neg_log_loss(n_classes),
        n_repeats=N_REPEATS,
        random_state=SEED,
    )
    falls = np.clip(np.asarray(result.importances_mean, dtype=np.float64), 0.0, None)
    total = float(falls.sum())
    # a model that ignores every input (all falls ≤ 0) relies on none: weigh features equally
    shares = falls / total if total > 0 else np.full(len(falls), 1.0 / len(falls))
    return FeatureImportance(
        method=METHOD,
        scoring=REGRESSION_SCORING if regression else SCORING,
        n_repeats=N_REPEATS,
        random_state=SEED,
        data=data,
        rows=len(x),
        values={name: round(float(s), 6) for name, s in zip(feature_names, shares, strict=True)},
    )
