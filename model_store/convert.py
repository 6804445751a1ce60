"""scikit-learn → ONNX conversion (skl2onnx) and the parity check that guards registration."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from model_store.errors import ParityError, RegistrationError
from model_store.manifest import ParityResult

DEFAULT_TOLERANCE = 1e-4
Precision = Literal["float32", "float64"]


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("scikit-learn", "skl2onnx", "onnxruntime", "onnx", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def to_onnx(
    estimator: Any, n_features: int, *, name: str, precision: Precision = "float32"
) -> bytes:
    """Convert a fitted classifier or pipeline to ONNX with tensor (not zipmap) outputs."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = FloatTensorType if precision == "float32" else DoubleTensorType
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not hasattr(final, "predict_proba"):
        raise RegistrationError("only classifiers with predict_proba can be registered")
    try:
        onx = convert_sklearn(
            estimator,
            name=name,
            initial_types=[("input", tensor([None, n_features]))],
            options={id(final): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise RegistrationError(f"skl2onnx could not convert this model: {exc}") from exc
    # A fixed producer stamp keeps the bytes (and sha256) reproducible across runs.
    onx.doc_string = ""
    data: bytes = onx.SerializeToString()
    return data


@dataclass(frozen=True)
class OnnxOutputs:
    labels: np.ndarray
    probabilities: np.ndarray


def run_onnx(onnx_bytes: bytes, x: np.ndarray) -> OnnxOutputs:
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    label, proba = sess.run(None, {inp.name: x.astype(dtype)})
    return OnnxOutputs(np.asarray(label), np.asarray(proba, dtype=np.float64))


def check_parity(
    estimator: Any, onnx_bytes: bytes, x_holdout: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> ParityResult:
    """Compare ONNX and scikit-learn on held-out rows; raise ParityError when they disagree."""
    ref_labels = np.asarray(estimator.predict(x_holdout))
    ref_proba = np.asarray(estimator.predict_proba(x_holdout), dtype=np.float64)
    try:
        got = run_onnx(onnx_bytes, x_holdout)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ParityError(
            f"the converted ONNX model does not run in onnxruntime: {exc}. Try the other "
            "--precision (float32 or float64)."
        ) from exc
    agreement = float(np.mean(got.labels.astype(ref_labels.dtype) == ref_labels))
    max_diff = float(np.max(np.abs(got.probabilities - ref_proba))) if len(x_holdout) else 0.0
    result = ParityResult(
        passed=agreement == 1.0 and max_diff <= tolerance,
        rows=len(x_holdout),
        label_agreement=agreement,
        max_abs_probability_diff=max_diff,
        tolerance=tolerance,
    )
    if not result.passed:
        raise ParityError(
            f"ONNX and scikit-learn disagree on {len(x_holdout)} held-out rows: label agreement "
            f"{agreement:.4f} (must be 1.0), max probability difference {max_diff:.3g} "
            f"(tolerance {tolerance:g}). Tree ensembles can differ by up to 1e-2 after "
            "conversion because thresholds and leaf sums change precision; try the other "
            "--precision (float32 or float64), or raise --tolerance if the difference is "
            "acceptable for your use."
        )
    return result
