"""A loaded model version: one onnxruntime session and what the hot path needs of its manifest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from model_store.inputs import feed
from model_store.manifest import Manifest
from model_store.store import ModelStore


@dataclass(slots=True)
class Prediction:
    labels: np.ndarray  # class indices, int64 [batch] (zeros for a regressor)
    probabilities: np.ndarray  # float32 [batch, n_classes] ([batch, 0] for a regressor)
    model_seconds: float
    values: np.ndarray | None = None  # a regressor's predictions, float64 [batch]

    @property
    def answers(self) -> np.ndarray:
        """What the model answered: a regressor's values, else the probabilities."""
        return self.probabilities if self.values is None else self.values

    def rows(self, start: int, stop: int, seconds: float) -> Prediction:
        """Rows ``start:stop`` of this prediction, charged ``seconds`` of model time."""
        values = None if self.values is None else self.values[start:stop]
        return Prediction(self.labels[start:stop], self.probabilities[start:stop], seconds, values)

    def finite(self) -> np.ndarray:
        """Per row: is the model's answer (probabilities or value) a finite number?"""
        if self.values is not None:
            ok: np.ndarray = np.isfinite(self.values)
            return ok
        rows: np.ndarray = np.isfinite(self.probabilities).all(axis=1)
        return rows


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the core the HTTP loop needs; a tabular model runs in microseconds.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


class LoadedModel:
    """Immutable once built; shared by all requests of a worker."""

    def __init__(self, manifest: Manifest, onnx_bytes: bytes, opts: ort.SessionOptions) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.sha256 = manifest.sha256
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        types = {i.type for i in self.session.get_inputs()}
        self.dtype = np.float64 if "tensor(double)" in types else np.float32
        self.regression = manifest.is_regression
        # columns: one input per feature (a categorical one among them); inputs arrive as an
        # object matrix of floats and str. tensor: the float64 matrix of the fast path.
        self.columns = manifest.input_mode == "columns"
        self.categorical: tuple[int, ...] = tuple(
            i for i, f in enumerate(manifest.features) if f.categorical
        )
        self.numeric: tuple[int, ...] = tuple(
            i for i, f in enumerate(manifest.features) if not f.categorical
        )
        self.known_categories: dict[int, frozenset[str]] = {
            i: frozenset(str(c) for c in manifest.features[i].categories or ())
            for i in self.categorical
        }
        self.feature_names: tuple[str, ...] = tuple(manifest.feature_names)
        self.n_features = len(self.feature_names)
        self.feature_index = {n: i for i, n in enumerate(self.feature_names)}
        self.class_names: tuple[str, ...] = tuple(manifest.outputs.class_names)
        self.class_names_arr = np.asarray(self.class_names, dtype=object)
        self._label_output = manifest.outputs.label
        self._proba_output = manifest.outputs.probabilities
        values = manifest.outputs.class_values
        self._identity_labels = values == list(range(len(values)))
        self._label_lookup = {v: i for i, v in enumerate(values)}
        if self.regression:
            self._outputs = [manifest.outputs.prediction or self.session.get_outputs()[0].name]
        else:
            label = self._label_output or "label"
            self._outputs = [label, self._proba_output or label]
        # InferenceSession.run checks names and options in Python on every call: ~2.7 of the
        # ~8 us a one-row prediction takes. Names are fixed at load, so call the binding it
        # wraps (the same C++ run and errors); the public method if a release renames it.
        self._run = getattr(self.session, "_sess", self.session).run
        self.codecs: dict[str, Any] = {}  # request decoders built for this model, by codec
        # Numeric features restricted to codes (categorical features are strings: see codecs).
        self.categories: dict[int, frozenset[float]] = {
            i: frozenset(float(c) for c in f.categories)
            for i, f in enumerate(manifest.features)
            if f.categories and not f.categorical
        }

    @classmethod
    def load(
        cls, store: ModelStore, model: str, version: int, opts: ort.SessionOptions
    ) -> LoadedModel:
        """Load a version, refusing it if its file does not match its manifest."""
        manifest, data = store.verified_model_bytes(model, version)
        loaded = cls(manifest, data, opts)
        loaded.smoke_test()
        return loaded

    def smoke_test(self) -> None:
        """One prediction on the training midpoints (categorical features: their first value);
        raises if the model cannot serve."""
        mid: list[object] = [
            str((f.categories or [""])[0])
            if f.categorical
            else ((f.min or 0.0) + (f.max or 0.0)) / 2
            for f in self.manifest.features
        ]
        pred = self.predict(np.asarray([mid], dtype=object if self.columns else np.float64))
        if self.regression:
            if pred.values is None or pred.values.shape != (1,):
                raise ValueError("smoke prediction of a regressor returned no single value")
            return
        if pred.probabilities.shape != (1, len(self.class_names)):
            raise ValueError(
                f"smoke prediction returned probabilities of shape {pred.probabilities.shape}, "
                f"expected (1, {len(self.class_names)})"
            )

    def predict(self, x: np.ndarray) -> Prediction:
        if self.columns or self.regression:
            return self._predict_kinds(x)
        start = time.perf_counter()
        label, proba = self._run(
            self._outputs, {self.input_name: x.astype(self.dtype, copy=False)}, None
        )
        elapsed = time.perf_counter() - start
        return Prediction(self._label_indices(label), np.asarray(proba, dtype=np.float32), elapsed)

    def _label_indices(self, label: Any) -> np.ndarray:
        """The class index of each label the ONNX model emitted."""
        if self._identity_labels:
            return np.asarray(label, dtype=np.int64).reshape(-1)
        return np.fromiter(
            (self._label_lookup[v] for v in np.asarray(label).reshape(-1).tolist()),
            dtype=np.int64,
        )

    def _predict_kinds(self, x: np.ndarray) -> Prediction:
        """Regressors, and models fed one input per column (``model_store.inputs``)."""
        feeds = (
            feed(x, self.manifest.features, self.input_name, self.dtype)
            if self.columns
            else {self.input_name: x.astype(self.dtype, copy=False)}
        )
        start = time.perf_counter()
        outs = self._run(self._outputs, feeds, None)
        elapsed = time.perf_counter() - start
        rows = x.shape[0]
        if self.regression:
            values = np.asarray(outs[0], dtype=np.float64).reshape(rows, -1)[:, 0]
            empty = np.empty((rows, 0), dtype=np.float32)
            return Prediction(np.zeros(rows, np.int64), empty, elapsed, values)
        label, proba = outs
        return Prediction(self._label_indices(label), np.asarray(proba, dtype=np.float32), elapsed)
