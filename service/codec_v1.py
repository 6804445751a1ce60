"""Decoding of the named-feature V1 request ``{"instances": [{feature: value}, …]}``.

The fast path builds the input matrix in C (itemgetter, numpy) and checks value types with one
set of types; only when it fails does the slow path walk the rows to name the exact problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from service.errors import InvalidInput
from service.runtime import LoadedModel
from service.validation import check_matrix, check_metadata, check_request_id, type_name

_ALLOWED_TOP = frozenset({"instances", "id", "metadata"})
_NUMBER_TYPES = frozenset({float, int})


@dataclass(frozen=True, slots=True)
class V1Request:
    x: np.ndarray  # float64 [batch, n_features], as received
    request_id: str | None
    metadata: dict[str, str]


def decode_v1(body: Any, model: LoadedModel, max_rows: int) -> V1Request:
    if not isinstance(body, dict):
        raise InvalidInput(f"body: expected a JSON object, got {type_name(body)}")
    extra = body.keys() - _ALLOWED_TOP
    if extra:
        raise InvalidInput(
            f"body: unknown field {sorted(extra)[0]!r}; allowed: instances, id, metadata"
        )
    instances = body.get("instances")
    if instances is None:
        raise InvalidInput("instances: required field is missing")
    if not isinstance(instances, list):
        raise InvalidInput(f"instances: expected an array of objects, got {type_name(instances)}")
    if not instances:
        raise InvalidInput("instances: the batch is empty")
    if len(instances) > max_rows:
        raise InvalidInput(f"instances: {len(instances)} rows exceed the limit of {max_rows}")
    request_id = check_request_id(body.get("id"), "id")
    metadata = check_metadata(body.get("metadata"))
    x = _matrix(instances, model)
    check_matrix(model, x, "instances")
    return V1Request(x, request_id, metadata)


def _matrix(instances: list[Any], model: LoadedModel) -> np.ndarray:
    n = model.n_features
    getter = itemgetter(*model.feature_names)
    try:
        if set(map(len, instances)) == {n}:
            rows = list(map(getter, instances))
            flat = chain.from_iterable(rows) if n > 1 else rows
            if set(map(type, flat)) <= _NUMBER_TYPES:
                x = np.array(rows, dtype=np.float64)
                return x.reshape(len(instances), n)
    except (KeyError, TypeError, OverflowError, ValueError):
        pass
    _explain(instances, model)
    raise InvalidInput("instances: invalid values")  # _explain always raises first


def _explain(instances: list[Any], model: LoadedModel) -> None:
    """Walk the rows and raise an error naming the first problem."""
    names = model.feature_index
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise InvalidInput(
                f"instances[{i}]: expected an object of features, got {type_name(row)}"
            )
        for key in row:
            if key not in names:
                raise InvalidInput(f"instances[{i}]: unknown feature {key!r}")
        for name in model.feature_names:
            if name not in row:
                raise InvalidInput(f"instances[{i}]: missing feature {name!r}")
            value = row[name]
            if type(value) not in _NUMBER_TYPES:
                raise InvalidInput(
                    f"instances[{i}].{name}: expected a number, got {type_name(value)}"
                )
            try:
                float(value)
            except OverflowError:
                raise InvalidInput(
                    f"instances[{i}].{name}: number {str(value)[:20]}… is out of range"
                ) from None
