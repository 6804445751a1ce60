"""scikit-learn → ONNX conversion (skl2onnx) and the parity check that guards registration.

Classifiers (any number of classes) and regressors; scikit-learn estimators and pipelines,
LightGBM and XGBoost models through onnxmltools' converters (the ``vigil[lightgbm]`` and
``vigil[xgboost]`` extras). Every conversion failure becomes one readable paragraph
(``conversion_error``): which estimator, which step, what to try.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from model_store.errors import ParityError, RegistrationError
from model_store.inputs import Column, feed, input_mode
from model_store.manifest import ParityResult, Task

DEFAULT_TOLERANCE = 1e-4
# Float32 trees whose thresholds scikit-learn (HistGradientBoosting) or LightGBM keep in float64:
# a value within float32 rounding of a threshold can take the other branch after conversion.
# Measured on the demo data sets: at most ~1e-6 on probabilities and relative predictions; this
# bound leaves room for other data (README, "Model kinds").
FLOAT32_TREE_TOLERANCE = 1e-3
Precision = Literal["float32", "float64"]
OPSET = {"": 17, "ai.onnx.ml": 3}
_FLOAT64_TREES = ("HistGradientBoosting", "LGBM")


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("scikit-learn", "skl2onnx", "onnxruntime", "onnx", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator


def estimator_task(estimator: Any) -> Task:
    """``classification`` or ``regression``, or a RegistrationError saying what is missing."""
    from sklearn.base import is_classifier, is_regressor

    final = final_step(estimator)
    kind = type(final).__name__
    if is_classifier(estimator) or is_classifier(final):
        if not hasattr(final, "predict_proba"):
            raise RegistrationError(
                f"{kind} is a classifier without predict_proba; Vigil serves class "
                "probabilities, so register a classifier that has them (for SVC: probability=True)"
            )
        if not list(getattr(final, "classes_", [])):
            raise RegistrationError(f"{kind} is not fitted (it has no classes_); fit it first")
        return "classification"
    if is_regressor(estimator) or is_regressor(final):
        if not hasattr(final, "n_features_in_"):
            raise RegistrationError(f"{kind} is not fitted (no n_features_in_); fit it first")
        return "regression"
    raise RegistrationError(
        f"{kind} is neither a classifier nor a regressor; Vigil registers a fitted "
        "scikit-learn-compatible classifier (with predict_proba) or regressor as the last step"
    )


def default_tolerance(estimator: Any, precision: Precision) -> float:
    """The parity tolerance used when none is given (README, "Model kinds")."""
    name = type(final_step(estimator)).__name__
    if precision == "float32" and name.startswith(_FLOAT64_TREES):
        return FLOAT32_TREE_TOLERANCE
    return DEFAULT_TOLERANCE


@functools.cache
def register_boosters() -> tuple[str, ...]:
    """Teach skl2onnx LightGBM's and XGBoost's scikit-learn models (onnxmltools' converters),
    for whichever of them is installed; returns their names."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    clf_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    done = []
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        pass
    else:
        update_registered_converter(
            LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
            convert_lightgbm, options=clf_options,
        )  # fmt: skip
        update_registered_converter(
            LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
            convert_lightgbm, options={"split": None},
        )  # fmt: skip
        done.append("lightgbm")
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        pass
    else:
        update_registered_converter(
            XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
            convert_xgboost, options=clf_options,
        )  # fmt: skip
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )  # fmt: skip
        done.append("xgboost")
    return tuple(done)


@functools.cache
def _fix_tree_missing_flags() -> None:
    """skl2onnx 1.20 writes HistGradientBoosting's ``nodes_missing_value_tracks_true`` as Python
    booleans; protobuf 7 refuses booleans in an ONNX int list ("Unable to create node
    'TreeEnsembleClassifier'"). Pass them on as the 0/1 integers ONNX defines (protobuf<7 accepts
    the booleans as they are)."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    @functools.wraps(original)
    def add_node(*args: Any, **kwargs: Any) -> Any:
        flag = kwargs.get("nodes_missing_value_tracks_true")
        if isinstance(flag, bool | np.bool_):
            kwargs["nodes_missing_value_tracks_true"] = int(flag)
        return original(*args, **kwargs)

    tree_ensemble.add_node = add_node


def to_onnx(
    estimator: Any,
    columns: int | Sequence[Column],
    *,
    name: str,
    precision: Precision = "float32",
) -> bytes:
    """Convert a fitted classifier, regressor or pipeline to ONNX; classifiers get tensor (not
    zipmap) outputs. ``columns``: the feature count of an all-numeric model (one ``[batch, n]``
    input), or the features by kind (one ``[batch, 1]`` input per feature when one is
    categorical)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    task = estimator_task(estimator)
    register_boosters()
    _fix_tree_missing_flags()
    tensor = FloatTensorType if precision == "float32" else DoubleTensorType
    if isinstance(columns, int) or input_mode(columns) == "tensor":
        n = columns if isinstance(columns, int) else len(columns)
        initial: list[tuple[str, Any]] = [("input", tensor([None, n]))]
    else:
        initial = [
            (c.name, StringTensorType([None, 1]) if c.kind == "categorical" else tensor([None, 1]))
            for c in columns
        ]
    final = final_step(estimator)
    options = {id(final): {"zipmap": False}} if task == "classification" else None
    try:
        onx = convert_sklearn(
            estimator, name=name, initial_types=initial, options=options, target_opset=OPSET
        )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise conversion_error(estimator, exc) from exc
    # A fixed producer stamp keeps the bytes (and sha256) reproducible across runs, and so does
    # a fixed order of the opset imports (skl2onnx collects them in a set: its order follows
    # the process's string hash seed once a model uses two domains).
    onx.doc_string = ""
    # (Named domains first: the order skl2onnx gives a one-converter model, so its bytes stay.)
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import), key=_domain, reverse=True)
    del onx.opset_import[:]
    for domain, ver in opsets:
        onx.opset_import.add(domain=domain, version=ver)
    data: bytes = onx.SerializeToString()
    return data


_EXTRAS = {"lightgbm": "lightgbm", "xgboost": "xgboost"}


def _steps(estimator: Any) -> list[tuple[str, Any]]:
    """(step name, estimator) of a pipeline, ColumnTransformer parts included, or the one."""
    if hasattr(estimator, "steps"):
        out: list[tuple[str, Any]] = []
        for step, est in estimator.steps:
            if hasattr(est, "transformers_"):
                out.extend(
                    (f"{step}/{part}", t)
                    for part, t, _ in est.transformers_
                    if not isinstance(t, str)
                )
            out.append((step, est))
        return out
    return [(type(estimator).__name__, estimator)]


def _supported(est: Any) -> bool:
    from skl2onnx._supported_operators import sklearn_operator_name_map

    return type(est) in sklearn_operator_name_map


# Where converters start dumping attributes (multi-kilobyte arrays) into their messages.
_DUMP = re.compile(r" with name=| and attributes=| \{'| array\(")


def _reason(exc: BaseException) -> str:
    """The first sentence of an error, without the attribute arrays some converters dump."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _DUMP.split(text)[0].strip().rstrip(":,.")
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0][:160].rstrip('.')})"
    return text[:300]


def conversion_error(estimator: Any, exc: BaseException) -> RegistrationError:
    """One paragraph: which estimator, which step, why, and what to try."""
    register_boosters()
    steps = _steps(estimator)
    unsupported = [(s, e) for s, e in steps if not _supported(e)]
    if unsupported:
        step, est = unsupported[0]
        kind = type(est).__name__
        module = type(est).__module__.split(".")[0]
        if module in _EXTRAS:
            hint = (
                f"install the converters with `pip install 'vigil[{_EXTRAS[module]}]'` "
                "(onnxmltools), then register again"
            )
        else:
            hint = (
                "skl2onnx has no converter for it: replace the step with a supported one, or "
                "convert the model yourself and register the ONNX file with --onnx and --schema"
            )
        return RegistrationError(
            f"cannot convert {kind} (step {step!r}) to ONNX: {_reason(exc)}. To fix: {hint}."
        )
    step, est = steps[-1]
    return RegistrationError(
        f"cannot convert {type(est).__name__} (step {step!r}) to ONNX: {_reason(exc)}. To fix: "
        "try the other --precision (float32 or float64), check that the installed skl2onnx "
        f"({library_versions()['skl2onnx']}) supports this estimator's version, or convert the "
        "model yourself and register the ONNX file with --onnx and --schema."
    )


def _domain(opset: tuple[str, int]) -> str:
    return opset[0]


@dataclass(frozen=True)
class OnnxOutputs:
    labels: np.ndarray  # raw label values (classification); empty for regression
    probabilities: np.ndarray  # float64 [rows, classes]; [rows, 0] for regression
    values: np.ndarray | None = None  # regression: float64 [rows]


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def onnx_float(sess: ort.InferenceSession) -> type[np.floating[Any]]:
    types = {i.type for i in sess.get_inputs()}
    return np.float64 if "tensor(double)" in types else np.float32


def run_onnx(
    onnx_bytes: bytes, x: np.ndarray, columns: Sequence[Column] | None = None
) -> OnnxOutputs:
    """Run the model on matrix ``x`` (``inputs.as_matrix``); ``columns`` when it has per-feature
    inputs. One output: a regressor's value; two: a classifier's label and probabilities."""
    sess = session(onnx_bytes)
    name = sess.get_inputs()[0].name
    cols = columns or [Column(name, "numeric")] * x.shape[1]
    outs = sess.run(None, feed(x, cols, name, onnx_float(sess)))
    rows = x.shape[0]
    if len(outs) == 1:
        values = np.asarray(outs[0], dtype=np.float64).reshape(rows, -1)[:, 0]
        return OnnxOutputs(np.empty(0), np.empty((rows, 0)), values)
    label, proba = outs[0], outs[-1]
    return OnnxOutputs(np.asarray(label), np.asarray(proba, dtype=np.float64))


def _sklearn_input(estimator: Any, x: np.ndarray, columns: Sequence[Column] | None) -> Any:
    """What the estimator was fitted on: a frame when it knows its feature names."""
    if columns is None or not hasattr(estimator, "feature_names_in_"):
        return x if columns is None or input_mode(columns) == "tensor" else _frame(x, columns)
    return _frame(x, columns)


def _frame(x: np.ndarray, columns: Sequence[Column]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            c.name: x[:, i].astype(str if c.kind == "categorical" else np.float64)
            for i, c in enumerate(columns)
        }
    )


def check_parity(
    estimator: Any,
    onnx_bytes: bytes,
    x_holdout: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    columns: Sequence[Column] | None = None,
    target_span: float = 0.0,
) -> ParityResult:
    """Compare ONNX and scikit-learn on held-out rows; raise ParityError when they disagree.

    Classifiers: labels equal and probabilities within ``tolerance``. Regressors: each prediction
    within ``tolerance * |prediction| + tolerance * target_span``."""
    task = estimator_task(estimator)
    sk_x = _sklearn_input(estimator, x_holdout, columns)
    try:
        got = run_onnx(onnx_bytes, x_holdout, columns)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ParityError(
            f"the converted ONNX model does not run in onnxruntime: {_reason(exc)}. Try the "
            "other --precision (float32 or float64)."
        ) from exc
    if task == "regression":
        return _regression_parity(estimator, sk_x, got, tolerance, target_span)
    ref_labels = np.asarray(estimator.predict(sk_x))
    ref_proba = np.asarray(estimator.predict_proba(sk_x), dtype=np.float64)
    rows = len(x_holdout)
    agreement = float(np.mean(got.labels.astype(ref_labels.dtype) == ref_labels)) if rows else 1.0
    max_diff = float(np.max(np.abs(got.probabilities - ref_proba))) if rows else 0.0
    result = ParityResult(
        passed=agreement == 1.0 and max_diff <= tolerance,
        rows=rows,
        label_agreement=agreement,
        max_abs_probability_diff=max_diff,
        tolerance=tolerance,
    )
    if not result.passed:
        raise ParityError(
            f"ONNX and scikit-learn disagree on {rows} held-out rows: label agreement "
            f"{agreement:.4f} (must be 1.0), max probability difference {max_diff:.3g} "
            f"(tolerance {tolerance:g}). Tree ensembles can differ by up to 1e-2 after "
            "conversion because thresholds and leaf sums change precision; try the other "
            "--precision (float32 or float64), or raise --tolerance if the difference is "
            "acceptable for your use."
        )
    return result


def _regression_parity(
    estimator: Any, sk_x: Any, got: OnnxOutputs, tolerance: float, target_span: float
) -> ParityResult:
    ref = np.asarray(estimator.predict(sk_x), dtype=np.float64).reshape(-1)
    assert got.values is not None
    diff = np.abs(got.values - ref)
    atol = tolerance * target_span
    rows = len(ref)
    max_abs = float(diff.max()) if rows else 0.0
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max()) if rows else 0.0
    finite = bool(np.isfinite(got.values).all())
    ok = finite and bool(np.all(diff <= tolerance * np.abs(ref) + atol))
    result = ParityResult(
        passed=ok,
        rows=rows,
        tolerance=tolerance,
        max_abs_prediction_diff=max_abs,
        max_rel_prediction_diff=max_rel,
        absolute_tolerance=atol,
    )
    if not ok:
        raise ParityError(
            f"ONNX and scikit-learn disagree on {rows} held-out rows: max prediction difference "
            f"{max_abs:.3g} (relative {max_rel:.3g}); allowed: {tolerance:g} relative plus "
            f"{atol:.3g} absolute ({tolerance:g} of the target's training span). Try the other "
            "--precision (float32 or float64), or raise --tolerance if the difference is "
            "acceptable for your use."
        )
    return result
