"""Shared checks on a decoded input matrix and on caller metadata."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from model_store.manifest import MAX_CATEGORY_CHARS
from service.core.loaded_model import LoadedModel, Prediction
from service.errors import InvalidInput

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 1024
# Up to this many values, a sum of Python floats says "all finite" in 0.3 µs; numpy's
# ``isfinite(a).all()`` takes 2 µs however small the array (twice per shadowed request).
_SMALL = 64


def check_matrix(model: LoadedModel, x: np.ndarray, where: str) -> None:
    """Reject NaN/inf, values out of the model's dtype range and unknown categories."""
    if model.columns:
        _check_columns(model, x, where)
        return
    # One reduction clears the common case: the largest magnitude is within the dtype's range
    # (NaN compares false, so it takes the detailed path below, like inf).
    limit = FLOAT32_MAX if model.dtype is np.float32 else FLOAT64_MAX
    if not (x.size and float(np.abs(x).max()) <= limit):
        _check_values(model, x, where)
    for col, allowed in model.categories.items():
        bad = ~np.isin(x[:, col], list(allowed))
        if bad.any():
            r = int(np.argmax(bad))
            raise InvalidInput(
                f"{where}[{r}].{model.feature_names[col]}: {x[r, col]:g} is not one of the "
                f"allowed categories {sorted(allowed)}"
            )


def _check_columns(model: LoadedModel, x: np.ndarray, where: str) -> None:
    """An object matrix of a model with categorical features: its numeric columns as numbers
    (names refer to the model's features), its strings within bounds."""
    num = list(model.numeric)
    if num:
        numbers = x[:, num].astype(np.float64)
        limit = FLOAT32_MAX if model.dtype is np.float32 else FLOAT64_MAX
        if not (numbers.size and float(np.abs(numbers).max()) <= limit):
            bad = ~np.isfinite(numbers) | (np.abs(numbers) > limit)
            r, c = np.argwhere(bad)[0]
            name = model.feature_names[num[c]]
            what = "is not a finite number" if not np.isfinite(numbers[r, c]) else "is out of range"
            raise InvalidInput(f"{where}[{r}].{name}: value {numbers[r, c]} {what}")
        for col, allowed in model.categories.items():  # numeric codes, as in check_matrix
            values = numbers[:, num.index(col)]
            bad = ~np.isin(values, list(allowed))
            if bad.any():
                r = int(np.argmax(bad))
                raise InvalidInput(
                    f"{where}[{r}].{model.feature_names[col]}: {values[r]:g} is not one of the "
                    f"allowed categories {sorted(allowed)}"
                )
    for col in model.categorical:
        check_categories(x[:, col].tolist(), model, col, where)


def check_categories(values: list[Any], model: LoadedModel, col: int, where: str) -> None:
    """Strings only, none longer than MAX_CATEGORY_CHARS; empty only if training saw it."""
    name = model.feature_names[col]
    for r, v in enumerate(values):
        if type(v) is not str:
            raise InvalidInput(f"{where}[{r}].{name}: expected a string, got {type_name(v)}")
        if len(v) > MAX_CATEGORY_CHARS:
            raise InvalidInput(
                f"{where}[{r}].{name}: value of {len(v)} characters exceeds the limit of "
                f"{MAX_CATEGORY_CHARS}"
            )
        if not v and "" not in model.known_categories[col]:
            raise InvalidInput(f"{where}[{r}].{name}: empty string is not a category")


def unseen_counts(model: LoadedModel, x: np.ndarray) -> dict[str, int]:
    """Per categorical feature, how many of the rows hold a value training never saw."""
    out = {}
    for col in model.categorical:
        known = model.known_categories[col]
        n = sum(1 for v in x[:, col].tolist() if v not in known)
        if n:
            out[model.feature_names[col]] = n
    return out


def _check_values(model: LoadedModel, x: np.ndarray, where: str) -> None:
    """Name the first value that is not finite or is out of the model's dtype range."""
    if not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise InvalidInput(
            f"{where}[{r}].{model.feature_names[c]}: value {x[r, c]} is not a finite number"
        )
    if model.dtype is np.float32:
        too_big = np.abs(x) > FLOAT32_MAX
        if too_big.any():
            r, c = np.argwhere(too_big)[0]
            raise InvalidInput(
                f"{where}[{r}].{model.feature_names[c]}: value {x[r, c]:g} is out of range "
                "for float32"
            )


def all_finite(values: np.ndarray) -> bool:
    """Whether no value is NaN or infinite (either makes the sum NaN or infinite; a sum that
    overflows from finite values is checked again value by value)."""
    if values.size <= _SMALL and math.isfinite(sum(values.ravel().tolist())):
        return True
    return bool(np.isfinite(values).all())


def check_prediction(pred: Prediction, where: str) -> None:
    """Refuse rows the model cannot score: finite inputs can still overflow inside the model
    (e.g. 3e38 in float32), and NaN probabilities must not be served as if they were an answer."""
    if all_finite(pred.answers):
        return
    r = int(np.argmin(pred.finite()))
    what = "prediction" if pred.values is not None else "probabilities"
    raise InvalidInput(
        f"{where}[{r}]: the model's {what} for this row are not finite numbers; "
        "its values are too far outside the range the model was trained on"
    )


def check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata: must be an object of string keys and string values")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidInput(f"metadata: at most {MAX_METADATA_KEYS} keys are allowed")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidInput(f"metadata.{key}: must be a string, got {_type_name(value)}")
        if len(value) > MAX_METADATA_VALUE or len(key) > 128:
            raise InvalidInput(f"metadata.{key[:128]}: key or value too long")
    return metadata


def check_request_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 128 or not value.isprintable():
        raise InvalidInput(f"{where}: must be a printable string of 1 to 128 characters")
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


type_name = _type_name


_FEEDBACK_KEYS = frozenset({"request_id", "row", "label", "model"})
FeedbackItem = tuple[str | None, str, int, str | float]
_LABEL_TYPES = frozenset({str, int, float})


def decode_feedback(body: Any, max_items: int) -> list[FeedbackItem]:
    """``[{"request_id", "row", "label", "model"?}, …]`` → (model, request_id, row, label)."""
    if not isinstance(body, list):
        raise InvalidInput(f"body: expected an array of feedback items, got {_type_name(body)}")
    if not body:
        raise InvalidInput("body: the feedback batch is empty")
    if len(body) > max_items:
        raise InvalidInput(f"body: {len(body)} items exceed the limit of {max_items}")
    out: list[FeedbackItem] = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise InvalidInput(f"[{i}]: expected an object, got {_type_name(item)}")
        extra = item.keys() - _FEEDBACK_KEYS
        if extra:
            raise InvalidInput(f"[{i}]: unknown field {sorted(extra)[0]!r}")
        request_id = check_request_id(item.get("request_id"), f"[{i}].request_id")
        if request_id is None:
            raise InvalidInput(f"[{i}].request_id: required field is missing")
        row = item.get("row", 0)
        if type(row) is not int or not 0 <= row < 1_000_000:
            raise InvalidInput(f"[{i}].row: expected a non-negative integer, got {row!r}")
        label: Any = item.get("label")
        if type(label) not in _LABEL_TYPES:
            raise InvalidInput(
                f"[{i}].label: expected a class name string or, for a regressor, a number; "
                f"got {_type_name(label)}"
            )
        model = item.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidInput(f"[{i}].model: expected a string")
        out.append((model, request_id, row, label))
    return out


def check_label(model: LoadedModel, label: str | float, where: str) -> str:
    """A label as the log stores it: a class name of a classifier, or a regressor's finite
    number as its ``repr`` (readers convert it back with ``float``)."""
    if model.regression:
        if type(label) is str:
            raise InvalidInput(
                f"{where}: expected a number ({model.name} is a regressor), got string"
            )
        try:
            value = float(label)
        except OverflowError:
            raise InvalidInput(f"{where}: number is out of range") from None
        if not np.isfinite(value):
            raise InvalidInput(f"{where}: {value} is not a finite number")
        return repr(value)
    if type(label) is not str:
        raise InvalidInput(
            f"{where}: expected a class name string of {model.name}, got {_type_name(label)}"
        )
    if label not in model.class_names:
        raise InvalidInput(
            f"{where}: {label[:64]!r} is not a class of {model.name} "
            f"({', '.join(model.class_names)})"
        )
    return label
