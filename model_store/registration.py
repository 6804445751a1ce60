"""Registering models: a fitted scikit-learn estimator with its data, or an ONNX file + schema."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from model_store.convert import (
    Precision,
    check_parity,
    default_tolerance,
    estimator_task,
    library_versions,
    run_onnx,
    session,
    to_onnx,
)
from model_store.errors import RegistrationError
from model_store.importance import feature_importance
from model_store.inputs import Column, Feature, as_matrix, column_kinds, input_mode
from model_store.log_columns import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    SPLIT_COLUMN,
    check_feature_names,
    proba_column,
)
from model_store.manifest import (
    MAX_CATEGORY_CHARS,
    DataFingerprint,
    FeatureImportance,
    FeatureSpec,
    InputMode,
    Manifest,
    OutputSpec,
    ParityResult,
    PiiPolicy,
)
from model_store.store import ModelStore, check_model_name

log = logging.getLogger(__name__)


def fingerprint(x: pd.DataFrame, y: np.ndarray) -> DataFingerprint:
    digest = hashlib.sha256()
    digest.update(",".join(x.columns).encode())
    numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c].dtype)]
    if len(numeric) == x.shape[1]:  # the original recipe, so old fingerprints still match
        digest.update(np.ascontiguousarray(x.to_numpy(dtype=np.float64)).tobytes())
    else:
        for col in x.columns:
            values = x[col]
            if col in numeric:
                digest.update(np.ascontiguousarray(values.to_numpy(dtype=np.float64)).tobytes())
            else:
                digest.update("\x1f".join(values.astype(str)).encode())
    digest.update(np.ascontiguousarray(np.asarray(y).astype(str)).astype("U").tobytes())
    return DataFingerprint(sha256=digest.hexdigest(), rows=len(x), columns=x.shape[1])


def _simple_params(estimator: Any) -> dict[str, Any]:
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    return {
        k: v for k, v in sorted(params.items()) if isinstance(v, str | int | float | bool | None)
    }


def quality(y_true: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Classification metrics; ``y_true`` and ``labels`` are class indices."""
    out = {
        "accuracy": float(accuracy_score(y_true, labels)),
        "f1_macro": float(f1_score(y_true, labels, average="macro")),
    }
    if proba.shape[1] == 2 and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    return out


def regression_quality(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of predictions against the numeric target."""
    out = {
        "mae": float(mean_absolute_error(y_true, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, predicted))),
    }
    if len(y_true) > 1:
        out["r2"] = float(r2_score(y_true, predicted))
    return out


def _feature_specs(
    x: pd.DataFrame, columns: list[Column], precision: Precision, pii: dict[str, PiiPolicy]
) -> list[FeatureSpec]:
    unknown = set(pii) - set(x.columns)
    if unknown:
        raise RegistrationError(f"PII policy names unknown features: {sorted(unknown)}")
    specs = []
    for c in columns:
        col = x[c.name]
        if c.kind == "categorical":
            values = col.astype(str)
            too_long = [v for v in values.unique() if len(v) > MAX_CATEGORY_CHARS]
            if too_long:
                raise RegistrationError(
                    f"feature {c.name!r}: category {too_long[0][:40]!r}… is longer than "
                    f"{MAX_CATEGORY_CHARS} characters, the longest value Vigil serves"
                )
            shares = values.value_counts(normalize=True)
            cats = sorted(str(v) for v in shares.index)
            specs.append(
                FeatureSpec(
                    name=c.name,
                    kind="categorical",
                    dtype="string",
                    categories=cats,
                    frequencies={k: round(float(shares[k]), 6) for k in cats},
                    pii=pii.get(c.name),
                )
            )
        else:
            specs.append(
                FeatureSpec(
                    name=c.name,
                    dtype=precision,
                    min=float(col.min()),
                    max=float(col.max()),
                    pii=pii.get(c.name),
                )
            )
    return specs


def _importance(
    onnx_bytes: bytes,
    x: np.ndarray,
    y_idx: np.ndarray,
    names: list[str],
    n_classes: int,
    data: str,
    columns: list[Column] | None = None,
) -> FeatureImportance | None:
    try:
        return feature_importance(
            onnx_bytes, x, y_idx, names, n_classes, data=data, columns=columns
        )
    except RegistrationError as exc:  # the model is still usable; drift falls back to the share
        log.warning("no feature importance: %s", exc)
        return None


def _reference_features(x: pd.DataFrame, columns: Sequence[Feature]) -> pd.DataFrame:
    """Features as the log stores them: numeric float64, categorical strings."""
    ref = pd.DataFrame(index=range(len(x)))
    for c in columns:
        col = x[c.name].reset_index(drop=True)
        ref[c.name] = col.astype(str) if c.kind == "categorical" else col.astype(np.float64)
    return ref


def _reference_frame(
    x: pd.DataFrame,
    y_idx: np.ndarray,
    split: np.ndarray,
    labels_idx: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    columns: Sequence[Feature] | None = None,
) -> pd.DataFrame:
    if columns is None:
        ref = x.reset_index(drop=True).astype(np.float64).copy()
    else:
        ref = _reference_features(x, columns)
    names = np.asarray(class_names, dtype=object)
    ref[PREDICTION_COLUMN] = names[labels_idx]
    for i, cname in enumerate(class_names):
        ref[proba_column(cname)] = proba[:, i]
    ref[LABEL_COLUMN] = names[y_idx]
    ref[SPLIT_COLUMN] = split
    return ref


def _regression_reference(
    x: pd.DataFrame,
    columns: Sequence[Feature],
    y: np.ndarray | None,
    predicted: np.ndarray,
    split: np.ndarray,
) -> pd.DataFrame:
    ref = _reference_features(x, columns)
    ref[PREDICTION_COLUMN] = predicted.astype(np.float64)
    ref[LABEL_COLUMN] = np.nan if y is None else np.asarray(y, dtype=np.float64)
    ref[SPLIT_COLUMN] = split
    return ref


def _numeric_target(y: np.ndarray) -> np.ndarray:
    try:
        values = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise RegistrationError(
            "the target holds values that are not numbers; a regressor's target must be numeric "
            "(for class labels, register a classifier)"
        ) from None
    if not np.isfinite(values).all():
        raise RegistrationError("the target holds NaN or infinite values; drop or fill those rows")
    return values


@dataclass(frozen=True)
class _Training:
    """What both tasks' registrations share: the model, its data by kind, and the options."""

    name: str
    estimator: Any
    x: pd.DataFrame
    columns: list[Column]
    matrix: np.ndarray  # ``inputs.as_matrix``: what the service decodes requests into
    holdout: np.ndarray
    precision: Precision
    tolerance: float
    pii: dict[str, PiiPolicy]
    metadata_pii: dict[str, PiiPolicy]
    description: str

    @property
    def mode(self) -> InputMode:
        return input_mode(self.columns)

    def convert(self) -> bytes:
        width = self.columns if self.mode == "columns" else self.x.shape[1]
        return to_onnx(self.estimator, width, name=self.name, precision=self.precision)

    def importance(
        self, onnx_bytes: bytes, y: np.ndarray, n_classes: int
    ) -> FeatureImportance | None:
        names = [c.name for c in self.columns]
        rows, held = self.matrix[self.holdout], y[self.holdout]
        data = "held-out validation rows"
        return _importance(onnx_bytes, rows, held, names, n_classes, data, self.columns)

    def manifest(self, version: int, sha: str, y: np.ndarray, **fields: Any) -> Manifest:
        """The passport; ``fields``: task, outputs, metrics, parity, feature_importance."""
        return Manifest(
            name=self.name,
            version=version,
            created_at=datetime.now(UTC),
            sha256=sha,
            opset=17,
            input_mode=self.mode,
            features=_feature_specs(self.x, self.columns, self.precision, self.pii),
            metadata_pii=self.metadata_pii,
            training_data=fingerprint(self.x, y),
            hyperparameters=_simple_params(self.estimator),
            library_versions=library_versions(),
            description=self.description,
            **fields,
        )


def register_sklearn(
    store: ModelStore,
    name: str,
    estimator: Any,
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    holdout_mask: np.ndarray,
    class_names: Sequence[str] | None = None,
    precision: Precision = "float32",
    tolerance: float | None = None,
    pii: dict[str, PiiPolicy] | None = None,
    metadata_pii: dict[str, PiiPolicy] | None = None,
    description: str = "",
    target_name: str = LABEL_COLUMN,
) -> Manifest:
    """Convert a fitted classifier or regressor, check parity on the held-out rows, and store a
    new version.

    ``x``/``y`` are the full training+validation data; ``holdout_mask`` marks validation rows.
    Numeric columns of ``x`` become numeric features, string columns categorical ones (one ONNX
    input per column). The reference sample holds every row with the model's predictions and
    the true label (or target value). ``tolerance``: ``convert.default_tolerance`` when None.
    """
    check_model_name(name)
    check_feature_names(str(c) for c in x.columns)  # before the seconds a conversion takes
    columns = column_kinds(x)
    task = estimator_task(estimator)
    training = _Training(
        name, estimator, x, columns, as_matrix(x, columns), holdout_mask, precision,
        default_tolerance(estimator, precision) if tolerance is None else tolerance,
        pii or {}, metadata_pii or {}, description,
    )  # fmt: skip
    if task == "regression":
        if class_names:
            raise RegistrationError("class names were given for a regressor")
        return _register_regressor(store, training, _numeric_target(y), target_name)
    return _register_classifier(store, training, y, class_names)


def _register_classifier(
    store: ModelStore, t: _Training, y: np.ndarray, class_names: Sequence[str] | None
) -> Manifest:
    classes = list(t.estimator.classes_)
    cnames = [str(c) for c in (class_names or classes)]
    if len(cnames) != len(classes):
        raise RegistrationError(f"{len(cnames)} class names given for {len(classes)} classes")
    class_index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in np.asarray(y).tolist() if v not in class_index})
    if unknown:
        raise RegistrationError(
            f"the target holds values the classifier does not know: {unknown[:5]} "
            f"(its classes: {[str(c) for c in classes][:10]})"
        )
    onnx_bytes = t.convert()
    parity = check_parity(
        t.estimator, onnx_bytes, t.matrix[t.holdout], t.tolerance, columns=t.columns
    )
    out = run_onnx(onnx_bytes, t.matrix, t.columns)
    y_idx = np.array([class_index[v] for v in np.asarray(y).tolist()])
    labels_idx = np.array([class_index[v] for v in out.labels.tolist()])
    held = t.holdout
    metrics = quality(y_idx[held], labels_idx[held], out.probabilities[held])
    split = np.where(held, "validation", "train")
    reference = _reference_frame(
        t.x, y_idx, split, labels_idx, out.probabilities, cnames,
        t.columns if t.mode == "columns" else None,
    )  # fmt: skip
    importance = t.importance(onnx_bytes, y_idx, len(classes))
    outputs = OutputSpec(
        class_names=cnames,
        class_values=[c.item() if hasattr(c, "item") else c for c in classes],
    )

    def build(version: int, sha: str) -> Manifest:
        return t.manifest(
            version, sha, y, outputs=outputs, metrics=metrics, parity=parity,
            feature_importance=importance,
        )  # fmt: skip

    return store.register(t.name, onnx_bytes, build, reference.to_parquet)


def _register_regressor(
    store: ModelStore, t: _Training, y: np.ndarray, target_name: str
) -> Manifest:
    onnx_bytes = t.convert()
    span = float(y.max() - y.min()) if len(y) else 0.0
    parity = check_parity(
        t.estimator, onnx_bytes, t.matrix[t.holdout], t.tolerance, columns=t.columns,
        target_span=span,
    )  # fmt: skip
    out = run_onnx(onnx_bytes, t.matrix, t.columns)
    assert out.values is not None
    metrics = regression_quality(y[t.holdout], out.values[t.holdout])
    split = np.where(t.holdout, "validation", "train")
    reference = _regression_reference(t.x, t.columns, y, out.values, split)
    importance = t.importance(onnx_bytes, y, 0)
    outputs = OutputSpec(
        label=None,
        probabilities=None,
        prediction=onnx_output_names(onnx_bytes)[0],
        target=target_name,
        min=float(y.min()),
        max=float(y.max()),
    )

    def build(version: int, sha: str) -> Manifest:
        return t.manifest(
            version, sha, y, task="regression", outputs=outputs, metrics=metrics, parity=parity,
            feature_importance=importance,
        )  # fmt: skip

    return store.register(t.name, onnx_bytes, build, reference.to_parquet)


def onnx_output_names(onnx_bytes: bytes) -> list[str]:
    return [o.name for o in session(onnx_bytes).get_outputs()]


def _class_indices(values: pd.Series, outputs: OutputSpec) -> np.ndarray:
    """Target values (raw class values or class names) as class indices."""
    lookup: dict[Any, int] = {str(v): i for i, v in enumerate(outputs.class_values)}
    lookup.update({n: i for i, n in enumerate(outputs.class_names)})
    idx = [lookup.get(str(v)) for v in values.tolist()]
    unknown = sorted({str(v) for v, i in zip(values.tolist(), idx, strict=True) if i is None})
    if unknown:
        raise RegistrationError(f"reference target holds unknown classes: {unknown[:5]}")
    return np.asarray(idx, dtype=np.int64)


def _onnx_reference(
    onnx_bytes: bytes,
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    outputs: OutputSpec,
    target: str,
    task: str,
) -> tuple[pd.DataFrame, FeatureImportance | None]:
    """The reference sample of an ONNX-only model (all rows count as validation rows) and, when
    the frame has labels, the importance measured on it."""
    names = [f.name for f in features]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise RegistrationError(f"reference data lacks features {missing}")
    columns = [Column(f.name, f.kind) for f in features]
    x_mat = as_matrix(frame, columns)
    out = run_onnx(onnx_bytes, x_mat, columns)
    labelled = target in frame.columns and bool(frame[target].notna().all())
    split = np.full(len(frame), "validation")
    data = "reference rows (ONNX-only registration)"
    if task == "regression":
        assert out.values is not None
        y = _numeric_target(frame[target].to_numpy()) if labelled else None
        ref = _regression_reference(frame, columns, y, out.values, split)
        if y is None:
            return ref, None
        return ref, _importance(onnx_bytes, x_mat, y, names, 0, data, columns)
    label_index = {str(v): i for i, v in enumerate(outputs.class_values)}
    labels_idx = np.array([label_index[str(v)] for v in out.labels.tolist()])
    y_idx = _class_indices(frame[target], outputs) if labelled else labels_idx
    ref = _reference_frame(
        frame, y_idx, split, labels_idx, out.probabilities, outputs.class_names, columns
    )
    if not labelled:
        ref[LABEL_COLUMN] = None  # unknown, not the model's own answer
        return ref, None
    n_classes = len(outputs.class_names)
    return ref, _importance(onnx_bytes, x_mat, y_idx, names, n_classes, data, columns)


def _probe(features: list[FeatureSpec]) -> pd.DataFrame:
    """One row: numeric features at their training midpoint, categorical at their first value."""
    return pd.DataFrame(
        {
            f.name: [
                str((f.categories or [""])[0])
                if f.categorical
                else ((f.min or 0.0) + (f.max or 0.0)) / 2
            ]
            for f in features
        }
    )


def register_onnx_file(
    store: ModelStore,
    name: str,
    onnx_path: Path,
    schema: dict[str, Any],
    *,
    reference: pd.DataFrame | None = None,
    target: str = LABEL_COLUMN,
) -> Manifest:
    """Register an existing ONNX model with a schema: ``task`` (classification by default),
    features (with their kinds), outputs (class names; for a regressor the target's name),
    optional PII. A model with a categorical feature takes one input per feature, named by it.

    Without the original model there is no parity check; the manifest records ``parity: null``.
    A smoke prediction on the schema's midpoints must succeed. ``reference`` (features, and the
    label in ``target`` when known) becomes the reference sample for drift; with labels, feature
    importance is measured on it, otherwise the manifest has none.
    """
    check_model_name(name)
    onnx_bytes = onnx_path.read_bytes()
    try:
        task = schema.get("task", "classification")
        if task not in ("classification", "regression"):
            raise ValueError(f"task {task!r} is not classification or regression")
        features = [FeatureSpec.model_validate(f) for f in schema["features"]]
        default_out: dict[str, Any] = (
            {"label": None, "probabilities": None} if task == "regression" else {}
        )
        outputs = OutputSpec.model_validate({**default_out, **schema.get("outputs", {})})
        metadata_pii = {k: PiiPolicy(v) for k, v in schema.get("metadata_pii", {}).items()}
    except (KeyError, ValueError, TypeError) as exc:
        raise RegistrationError(f"schema file is invalid: {exc}") from exc
    check_feature_names(f.name for f in features)
    mode = input_mode(features)
    columns = [Column(f.name, f.kind) for f in features]
    try:
        sess = session(onnx_bytes)
        inputs = [i.name for i in sess.get_inputs()]
        if mode == "columns" and sorted(inputs) != sorted(f.name for f in features):
            raise RegistrationError(
                f"a model with categorical features takes one input per feature, named by it; "
                f"this one's inputs are {inputs[:10]}"
            )
        results = run_onnx(onnx_bytes, as_matrix(_probe(features), columns), columns)
    except RegistrationError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RegistrationError(f"ONNX smoke prediction failed: {exc}") from exc
    if task == "regression":
        if results.values is None:
            raise RegistrationError("the schema says regression; the model has several outputs")
        outputs.prediction = outputs.prediction or onnx_output_names(onnx_bytes)[0]
        outputs.target = outputs.target or target
    else:
        n_classes = results.probabilities.shape[-1]
        if results.values is not None:
            raise RegistrationError(
                'the model has one output, like a regressor; say "task": "regression" in the '
                "schema, or register a classifier with label and probabilities outputs"
            )
        if outputs.class_names and len(outputs.class_names) != n_classes:
            raise RegistrationError(
                f"schema names {len(outputs.class_names)} classes, the model outputs {n_classes}"
            )
        if not outputs.class_names:
            outputs.class_names = [str(i) for i in range(n_classes)]
        if not outputs.class_values:
            outputs.class_values = list(range(n_classes))
    ref_frame, importance = (None, None)
    if reference is not None:
        ref_frame, importance = _onnx_reference(
            onnx_bytes, reference, features, outputs, target, task
        )

    def build(version: int, sha: str) -> Manifest:
        return Manifest(
            name=name,
            version=version,
            created_at=datetime.now(UTC),
            sha256=sha,
            task=task,
            input_name=inputs[0],
            input_mode=mode,
            features=features,
            outputs=outputs,
            metadata_pii=metadata_pii,
            library_versions=library_versions(),
            parity=None,
            feature_importance=importance,
            description=str(schema.get("description", "")),
        )

    return store.register(
        name, onnx_bytes, build, None if ref_frame is None else ref_frame.to_parquet
    )


__all__ = [
    "LABEL_COLUMN",
    "PREDICTION_COLUMN",
    "SPLIT_COLUMN",
    "ParityResult",
    "proba_column",
    "quality",
    "register_onnx_file",
    "register_sklearn",
    "regression_quality",
]
