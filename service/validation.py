"""Shared checks on a decoded input matrix and on caller metadata."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.runtime import LoadedModel

_FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE = 1024


def check_matrix(model: LoadedModel, x: np.ndarray, where: str) -> None:
    """Reject NaN/inf, values out of the model's dtype range and unknown categories."""
    if not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise InvalidInput(
            f"{where}[{r}].{model.feature_names[c]}: value {x[r, c]} is not a finite number"
        )
    if model.dtype is np.float32:
        too_big = np.abs(x) > _FLOAT32_MAX
        if too_big.any():
            r, c = np.argwhere(too_big)[0]
            raise InvalidInput(
                f"{where}[{r}].{model.feature_names[c]}: value {x[r, c]:g} is out of range "
                "for float32"
            )
    for col, allowed in model.categories.items():
        bad = ~np.isin(x[:, col], list(allowed))
        if bad.any():
            r = int(np.argmax(bad))
            raise InvalidInput(
                f"{where}[{r}].{model.feature_names[col]}: {x[r, col]:g} is not one of the "
                f"allowed categories {sorted(allowed)}"
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
    return {bool: "boolean", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


type_name = _type_name
