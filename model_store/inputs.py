"""What an ONNX model of the store is fed: its features, by kind, as onnxruntime inputs.

The one place that knows both input modes (``Manifest.input_mode``): ``tensor`` (every feature
numeric: one ``[batch, n]`` float tensor, the serving fast path) and ``columns`` (a categorical
feature among them: one ``[batch, 1]`` input per feature, named by it, float or string).
Registration, importance, back-test and serving build their feeds here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from model_store.errors import RegistrationError
from model_store.manifest import FeatureKind, InputMode


class Feature(Protocol):
    """A feature's name and kind: a manifest's ``FeatureSpec`` or a training ``Column``."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> FeatureKind: ...


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: FeatureKind


def column_kinds(x: pd.DataFrame) -> list[Column]:
    """Each training column's kind from its dtype: numbers are numeric, strings categorical."""
    out = []
    for name in x.columns:
        col = x[name]
        if pd.api.types.is_bool_dtype(col.dtype):
            raise RegistrationError(
                f"column {name!r} is boolean; encode it as 0/1 numbers or as strings "
                "(a categorical feature) before training and registering"
            )
        if pd.api.types.is_numeric_dtype(col.dtype):
            out.append(Column(str(name), "numeric"))
        elif _all_strings(col):
            out.append(Column(str(name), "categorical"))
        else:
            raise RegistrationError(
                f"column {name!r} holds values that are neither all numbers nor all strings "
                f"(dtype {col.dtype}); Vigil serves numeric and string (categorical) features"
            )
    return out


def _all_strings(col: pd.Series) -> bool:
    if isinstance(col.dtype, pd.CategoricalDtype):
        return all(isinstance(c, str) for c in col.dtype.categories)
    return bool(col.map(lambda v: isinstance(v, str)).all())


def input_mode(features: Sequence[Feature]) -> InputMode:
    return "columns" if any(f.kind == "categorical" for f in features) else "tensor"


def as_matrix(x: pd.DataFrame, features: Sequence[Feature]) -> np.ndarray:
    """A frame as the matrix the service decodes requests into: float64 for an all-numeric
    model, else object (floats and ``str``) in feature order."""
    names = [f.name for f in features]
    if input_mode(features) == "tensor":
        matrix: np.ndarray = x[names].to_numpy(dtype=np.float64)
        return matrix
    out = np.empty((len(x), len(names)), dtype=object)
    for i, f in enumerate(features):
        col = x[f.name]
        out[:, i] = col.astype(str) if f.kind == "categorical" else col.astype(np.float64)
    return out


def feed(
    x: np.ndarray,
    features: Sequence[Feature],
    input_name: str,
    dtype: type[np.floating[Any]],
) -> dict[str, np.ndarray]:
    """onnxruntime inputs for matrix ``x`` (see ``as_matrix``)."""
    if input_mode(features) == "tensor":
        return {input_name: x.astype(dtype, copy=False)}
    out: dict[str, np.ndarray] = {}
    for i, f in enumerate(features):
        col = x[:, i : i + 1]
        out[f.name] = col.astype(object) if f.kind == "categorical" else col.astype(dtype)
    return out
