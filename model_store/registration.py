"""Registering models: a fitted scikit-learn estimator with its data, or an ONNX file + schema."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from model_store.convert import (
    DEFAULT_TOLERANCE,
    Precision,
    check_parity,
    library_versions,
    run_onnx,
    to_onnx,
)
from model_store.errors import RegistrationError
from model_store.importance import feature_importance
from model_store.log_columns import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    SPLIT_COLUMN,
    check_feature_names,
    proba_column,
)
from model_store.manifest import (
    DataFingerprint,
    FeatureImportance,
    FeatureSpec,
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
    digest.update(np.ascontiguousarray(x.to_numpy(dtype=np.float64)).tobytes())
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


def _feature_specs(
    x: pd.DataFrame, precision: Precision, pii: dict[str, PiiPolicy]
) -> list[FeatureSpec]:
    unknown = set(pii) - set(x.columns)
    if unknown:
        raise RegistrationError(f"PII policy names unknown features: {sorted(unknown)}")
    return [
        FeatureSpec(
            name=str(col),
            dtype=precision,
            min=float(x[col].min()),
            max=float(x[col].max()),
            pii=pii.get(str(col)),
        )
        for col in x.columns
    ]


def _importance(
    onnx_bytes: bytes, x: np.ndarray, y_idx: np.ndarray, names: list[str], n_classes: int, data: str
) -> FeatureImportance | None:
    try:
        return feature_importance(onnx_bytes, x, y_idx, names, n_classes, data=data)
    except RegistrationError as exc:  # the model is still usable; drift falls back to the share
        log.warning("no feature importance: %s", exc)
        return None


def _reference_frame(
    x: pd.DataFrame,
    y_idx: np.ndarray,
    split: np.ndarray,
    labels_idx: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
) -> pd.DataFrame:
    ref = x.reset_index(drop=True).astype(np.float64).copy()
    names = np.asarray(class_names, dtype=object)
    ref[PREDICTION_COLUMN] = names[labels_idx]
    for i, cname in enumerate(class_names):
        ref[proba_column(cname)] = proba[:, i]
    ref[LABEL_COLUMN] = names[y_idx]
    ref[SPLIT_COLUMN] = split
    return ref


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
    tolerance: float = DEFAULT_TOLERANCE,
    pii: dict[str, PiiPolicy] | None = None,
    metadata_pii: dict[str, PiiPolicy] | None = None,
    description: str = "",
) -> Manifest:
    """Convert a fitted classifier, check parity on the held-out rows, and store a new version.

    ``x``/``y`` are the full training+validation data; ``holdout_mask`` marks validation rows.
    The reference sample holds every row with the model's predictions and the true label.
    """
    check_model_name(name)
    check_feature_names(str(c) for c in x.columns)  # before the seconds a conversion takes
    classes = list(getattr(estimator, "classes_", []))
    if not classes:
        raise RegistrationError("the estimator is not fitted (it has no classes_)")
    cnames = [str(c) for c in (class_names or classes)]
    if len(cnames) != len(classes):
        raise RegistrationError(f"{len(cnames)} class names given for {len(classes)} classes")
    x_np = x.to_numpy(dtype=np.float64)
    onnx_bytes = to_onnx(estimator, x.shape[1], name=name, precision=precision)
    parity = check_parity(estimator, onnx_bytes, x_np[holdout_mask], tolerance)

    out = run_onnx(onnx_bytes, x_np)
    class_index = {c: i for i, c in enumerate(classes)}
    y_idx = np.array([class_index[v] for v in np.asarray(y).tolist()])
    labels_idx = np.array([class_index[v] for v in out.labels.tolist()])
    metrics = quality(
        y_idx[holdout_mask], labels_idx[holdout_mask], out.probabilities[holdout_mask]
    )
    split = np.where(holdout_mask, "validation", "train")
    reference = _reference_frame(x, y_idx, split, labels_idx, out.probabilities, cnames)
    importance = _importance(
        onnx_bytes,
        x_np[holdout_mask],
        y_idx[holdout_mask],
        [str(c) for c in x.columns],
        len(classes),
        data="held-out validation rows",
    )

    def build(version: int, sha: str) -> Manifest:
        return Manifest(
            name=name,
            version=version,
            created_at=datetime.now(UTC),
            sha256=sha,
            opset=17,
            features=_feature_specs(x, precision, pii or {}),
            outputs=OutputSpec(
                class_names=cnames,
                class_values=[c.item() if hasattr(c, "item") else c for c in classes],
            ),
            metadata_pii=metadata_pii or {},
            training_data=fingerprint(x, y),
            hyperparameters=_simple_params(estimator),
            metrics=metrics,
            library_versions=library_versions(),
            parity=parity,
            feature_importance=importance,
            description=description,
        )

    return store.register(name, onnx_bytes, build, reference.to_parquet)


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
) -> tuple[pd.DataFrame, FeatureImportance | None]:
    """The reference sample of an ONNX-only model (all rows count as validation rows) and, when
    the frame has labels, the importance measured on it."""
    names = [f.name for f in features]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise RegistrationError(f"reference data lacks features {missing}")
    x = frame[names].astype(np.float64)
    out = run_onnx(onnx_bytes, x.to_numpy())
    label_index = {str(v): i for i, v in enumerate(outputs.class_values)}
    labels_idx = np.array([label_index[str(v)] for v in out.labels.tolist()])
    labelled = target in frame.columns and bool(frame[target].notna().all())
    y_idx = _class_indices(frame[target], outputs) if labelled else labels_idx
    split = np.full(len(x), "validation")
    ref = _reference_frame(x, y_idx, split, labels_idx, out.probabilities, outputs.class_names)
    if not labelled:
        ref[LABEL_COLUMN] = None  # unknown, not the model's own answer
        return ref, None
    n_classes = len(outputs.class_names)
    data = "reference rows (ONNX-only registration)"
    return ref, _importance(onnx_bytes, x.to_numpy(), y_idx, names, n_classes, data)


def register_onnx_file(
    store: ModelStore,
    name: str,
    onnx_path: Path,
    schema: dict[str, Any],
    *,
    reference: pd.DataFrame | None = None,
    target: str = LABEL_COLUMN,
) -> Manifest:
    """Register an existing ONNX classifier with a schema: features, class names, optional PII.

    Without the original model there is no parity check; the manifest records ``parity: null``.
    A smoke prediction on the schema's midpoints must succeed. ``reference`` (features, and the
    label in ``target`` when known) becomes the reference sample for drift; with labels, feature
    importance is measured on it, otherwise the manifest has none.
    """
    check_model_name(name)
    onnx_bytes = onnx_path.read_bytes()
    try:
        features = [FeatureSpec.model_validate(f) for f in schema["features"]]
        outputs = OutputSpec.model_validate(schema.get("outputs", {}))
        metadata_pii = {k: PiiPolicy(v) for k, v in schema.get("metadata_pii", {}).items()}
    except (KeyError, ValueError, TypeError) as exc:
        raise RegistrationError(f"schema file is invalid: {exc}") from exc
    check_feature_names(f.name for f in features)
    try:
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        probe = np.array(
            [[((f.min or 0.0) + (f.max or 0.0)) / 2 for f in features]],
            dtype=np.float64 if inp.type == "tensor(double)" else np.float32,
        )
        results = sess.run(None, {inp.name: probe})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise RegistrationError(f"ONNX smoke prediction failed: {exc}") from exc
    n_classes = np.asarray(results[-1]).shape[-1]
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
        ref_frame, importance = _onnx_reference(onnx_bytes, reference, features, outputs, target)

    def build(version: int, sha: str) -> Manifest:
        return Manifest(
            name=name,
            version=version,
            created_at=datetime.now(UTC),
            sha256=sha,
            input_name=inp.name,
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
]
