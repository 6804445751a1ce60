"""Open Inference Protocol (V2) tensors: decoding requests and encoding responses.

Supports JSON tensors and the binary tensor data extension (``Inference-Header-Content-Length``)
that tritonclient uses with ``binary_data=True``.

``decode_v2_json`` first tries a typed decoder (msgspec) for the common request: one
``[batch, n_features]`` tensor of flat JSON numbers, outputs named or left out, no parameters.
Anything else, and anything it refuses, goes through the general path (orjson, then
``decode_v2``), which handles every form and names every problem.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson

from service.core.jsonparse import check_duplicate_keys, parse_json
from service.core.loaded_model import LoadedModel, Prediction
from service.core.validation import check_matrix, check_request_id, type_name
from service.errors import BadRequest, InvalidInput

LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"  # a regressor's one output, FP64 [batch]
OUTPUTS = (LABEL, PROBABILITIES)
REGRESSION_OUTPUTS = (PREDICTION,)
BYTES = "BYTES"  # string tensors: categorical features
_NP_TYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_NUMBER_TYPES = frozenset({float, int})


@dataclass(slots=True)
class V2Request:
    x: np.ndarray
    request_id: str | None
    outputs: tuple[str, ...]
    binary_outputs: frozenset[str]


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest("Inference-Header-Content-Length: must be an integer") from None
    if not 0 < n <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length: {n} is outside the body of {len(body)} bytes"
        )
    return body[:n], body[n:]


class _TypedTensor(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class _TypedOutput(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class _TypedRequest(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[_TypedTensor]
    id: str | msgspec.UnsetType | None = msgspec.UNSET
    outputs: list[_TypedOutput] | msgspec.UnsetType = msgspec.UNSET


_TYPED = msgspec.json.Decoder(_TypedRequest)


def decode_v2_json(head: bytes, binary: bytes, model: LoadedModel, max_rows: int) -> V2Request:
    """A V2 request as received (JSON header bytes, binary section) → the model's input."""
    if not binary:
        try:
            typed = _TYPED.decode(head)
        except (msgspec.MsgspecError, ValueError):
            pass
        else:
            req = _typed_request(typed, head, model, max_rows)
            if req is not None:
                return req
    return decode_v2(parse_json(head), binary, model, max_rows)


def _typed_request(
    typed: _TypedRequest, head: bytes, model: LoadedModel, max_rows: int
) -> V2Request | None:
    """The common request, or None for the general path to decode (and explain)."""
    if len(typed.inputs) != 1:
        return None
    t = typed.inputs[0]
    n = model.n_features
    if model.columns:
        return None
    if t.datatype not in _NP_TYPES or len(t.shape) != 2 or t.shape[1] != n:
        return None
    rows = t.shape[0]
    if not 0 < rows <= max_rows or len(t.data) != rows * n:
        return None
    outputs = [] if typed.outputs is msgspec.UNSET else typed.outputs
    request_id = None if typed.id is msgspec.UNSET else typed.id
    kept = 1 + (typed.id is not msgspec.UNSET) + (typed.outputs is not msgspec.UNSET) + 4
    check_duplicate_keys(head, kept + len(outputs))
    request_id = check_request_id(request_id, "id")
    x = np.array(t.data, dtype=np.float64).reshape(rows, n)
    check_matrix(model, x, "inputs")
    requested = None if typed.outputs is msgspec.UNSET else [{"name": o.name} for o in outputs]
    names, binary_outputs = _requested_outputs(requested, {}, model_outputs(model))
    return V2Request(x, request_id, names, binary_outputs)


def decode_v2(body: Any, binary: bytes, model: LoadedModel, max_rows: int) -> V2Request:
    if not isinstance(body, dict):
        raise InvalidInput(f"body: expected a JSON object, got {type_name(body)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: expected a non-empty array of tensors")
    params = body.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput("parameters: expected an object")
    request_id = check_request_id(body.get("id"), "id")
    tensors: list[_Tensor] = []
    offset = 0
    for i, t in enumerate(inputs):
        tensor, used = _tensor(t, i, binary, offset, model.columns)
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(f"binary data: {len(binary)} bytes sent, the tensors declare {offset}")
    x = _assemble(tensors, model, max_rows)
    check_matrix(model, x, "inputs")
    outputs, binary_outputs = _requested_outputs(
        body.get("outputs"), params or {}, model_outputs(model)
    )
    return V2Request(x, request_id, outputs, binary_outputs)


@dataclass(slots=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    data: np.ndarray  # flat float64; BYTES: flat object of str
    datatype: str = "FP64"


def _tensor(
    t: Any, i: int, binary: bytes, offset: int, strings: bool = False
) -> tuple[_Tensor, int]:
    """A decoded tensor and how many bytes of the binary section it consumed; ``strings``:
    the model has categorical features (BYTES tensors)."""
    where = f"inputs[{i}]"
    if not isinstance(t, dict):
        raise InvalidInput(f"{where}: expected a tensor object, got {type_name(t)}")
    name, shape, dtype = t.get("name"), t.get("shape"), t.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: required string is missing")
    where = f"inputs[{name!r}]"
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > 2
        or any(type(d) is not int or d < 0 for d in shape)
    ):
        raise InvalidInput(f"{where}.shape: expected 1 or 2 non-negative integers, got {shape!r}")
    if dtype not in _NP_TYPES and not (strings and dtype == BYTES):
        hint = " (BYTES for categorical features)" if strings else ": the features are numeric"
        raise InvalidInput(f"{where}.datatype: {dtype!r} is not supported; use FP32 or FP64{hint}")
    count = math.prod(shape)
    tparams = t.get("parameters") or {}
    if not isinstance(tparams, dict):
        raise InvalidInput(f"{where}.parameters: expected an object")
    used = 0
    if "binary_data_size" in tparams:
        used = tparams["binary_data_size"]
        if dtype == BYTES:
            data = _binary_strings(used, binary[offset:], where)
        else:
            data = _binary_data(used, binary[offset:], _NP_TYPES[dtype], where)
    elif dtype == BYTES:
        data = _json_strings(t.get("data"), where)
    else:
        data = _json_data(t.get("data"), where)
    if data.size != count:
        raise InvalidInput(f"{where}: shape {shape} needs {count} values, data has {data.size}")
    return _Tensor(name, tuple(shape), data, dtype), used


def _binary_strings(size: Any, binary: bytes, where: str) -> np.ndarray:
    """BYTES in the binary extension: each element a little-endian u32 length, then its bytes."""
    if type(size) is not int or size < 0:
        raise InvalidInput(f"{where}.parameters.binary_data_size: invalid size {size!r}")
    if size > len(binary):
        raise InvalidInput(f"{where}: binary_data_size {size} exceeds the binary payload")
    out: list[str] = []
    pos, raw = 0, binary[:size]
    while pos < size:
        if pos + 4 > size:
            raise InvalidInput(f"{where}: BYTES element length cut off at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > size:
            raise InvalidInput(f"{where}: BYTES element of {n} bytes overruns the tensor")
        try:
            out.append(raw[pos + 4 : pos + 4 + n].decode())
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: element {len(out)} is not UTF-8 text") from None
        pos += 4 + n
    return _objects(out)


def _json_strings(data: Any, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data: expected an array of strings, got {type_name(data)}")
    flat: list[Any] = data
    while flat and isinstance(flat[0], list):
        if not all(isinstance(v, list) for v in flat):
            raise InvalidInput(f"{where}.data: mixes arrays and scalars")
        flat = list(chain.from_iterable(flat))
    for v in flat:
        if type(v) is not str:
            raise InvalidInput(f"{where}.data: expected strings, found {type_name(v)}")
    return _objects(flat)


def _objects(values: list[str]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _binary_data(size: Any, binary: bytes, dtype: np.dtype[Any], where: str) -> np.ndarray:
    if type(size) is not int or size < 0 or size % dtype.itemsize:
        raise InvalidInput(f"{where}.parameters.binary_data_size: invalid size {size!r}")
    if size > len(binary):
        raise InvalidInput(f"{where}: binary_data_size {size} exceeds the binary payload")
    return np.frombuffer(binary[:size], dtype=dtype).astype(np.float64)


def _json_data(data: Any, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}.data: expected an array of numbers, got {type_name(data)}")
    flat: list[Any] = data
    while flat and isinstance(flat[0], list):
        if not all(isinstance(v, list) for v in flat):
            raise InvalidInput(f"{where}.data: mixes arrays and scalars")
        flat = list(chain.from_iterable(flat))
    if not set(map(type, flat)) <= _NUMBER_TYPES:
        bad = next(v for v in flat if type(v) not in _NUMBER_TYPES)
        raise InvalidInput(f"{where}.data: expected numbers, found {type_name(bad)}")
    try:
        return np.array(flat, dtype=np.float64)
    except OverflowError:
        raise InvalidInput(f"{where}.data: a number is out of range") from None


def _assemble(tensors: list[_Tensor], model: LoadedModel, max_rows: int) -> np.ndarray:
    n = model.n_features
    if model.columns:
        return _assemble_columns(tensors, model, max_rows)
    if len(tensors) == 1 and len(tensors[0].shape) == 2:
        t = tensors[0]
        if t.shape[1] != n:
            raise InvalidInput(
                f"inputs[{t.name!r}].shape: expected [batch, {n}], got {list(t.shape)}"
            )
        rows = t.shape[0]
        x = t.data.reshape(rows, n)
    else:
        by_name, rows = _feature_tensors(
            tensors, model, f"send one [batch, {n}] tensor or one tensor per feature"
        )
        x = np.column_stack([by_name[f].data for f in model.feature_names])
    _check_rows(rows, max_rows)
    return x


def _assemble_columns(tensors: list[_Tensor], model: LoadedModel, max_rows: int) -> np.ndarray:
    """One tensor per feature, named by it: BYTES for categorical, FP32/FP64 for numeric."""
    by_name, rows = _feature_tensors(
        tensors,
        model,
        "this model takes one tensor per feature, named by it (BYTES for categorical features, "
        "FP32/FP64 for numeric)",
    )
    _check_rows(rows, max_rows)
    x = np.empty((rows, model.n_features), dtype=object)
    for j, name in enumerate(model.feature_names):
        t = by_name[name]
        categorical = j in model.known_categories
        if categorical != (t.datatype == BYTES):
            want = "BYTES (a categorical feature)" if categorical else "FP32 or FP64"
            raise InvalidInput(f"inputs[{name!r}].datatype: {t.datatype}, expected {want}")
        x[:, j] = t.data
    return x


def _feature_tensors(
    tensors: list[_Tensor], model: LoadedModel, hint: str
) -> tuple[dict[str, _Tensor], int]:
    """One tensor per feature, by feature name, and the batch size they share."""
    by_name = {t.name: t for t in tensors}
    if len(by_name) != len(tensors):
        raise InvalidInput("inputs: a tensor name appears twice")
    unknown = by_name.keys() - model.feature_index.keys()
    if unknown:
        raise InvalidInput(f"inputs: unknown tensor {sorted(unknown)[0]!r}; {hint}")
    missing = [f for f in model.feature_names if f not in by_name]
    if missing:
        raise InvalidInput(f"inputs: missing feature tensor {missing[0]!r}")
    lengths = {t.shape[0] for t in tensors}
    if len(lengths) != 1 or any(len(t.shape) == 2 and t.shape[1] != 1 for t in tensors):
        raise InvalidInput("inputs: feature tensors must all have shape [batch] or [batch, 1]")
    return by_name, lengths.pop()


def _check_rows(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise InvalidInput("inputs: the batch is empty")
    if rows > max_rows:
        raise InvalidInput(f"inputs: {rows} rows exceed the limit of {max_rows}")


def model_outputs(model: LoadedModel) -> tuple[str, ...]:
    return REGRESSION_OUTPUTS if model.regression else OUTPUTS


def _requested_outputs(
    outputs: Any, params: dict[str, Any], known: tuple[str, ...] = OUTPUTS
) -> tuple[tuple[str, ...], frozenset[str]]:
    default_binary = params.get("binary_data_output") is True
    if outputs is None:
        names = known
        return names, frozenset(names) if default_binary else frozenset()
    if not isinstance(outputs, list):
        raise InvalidInput("outputs: expected an array of {name} objects")
    names_list: list[str] = []
    binary: set[str] = set()
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise InvalidInput(f"outputs[{i}]: expected an object with a string name")
        name = o["name"]
        if name not in known:
            raise InvalidInput(f"outputs[{i}].name: unknown output {name!r}; known: {list(known)}")
        names_list.append(name)
        oparams = o.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise InvalidInput(f"outputs[{i}].parameters: expected an object")
        if oparams.get("binary_data", default_binary) is True:
            binary.add(name)
    return tuple(dict.fromkeys(names_list)), frozenset(binary)


def encode_v2(
    model: LoadedModel, req: V2Request, pred: Prediction, request_id: str
) -> tuple[bytes, int | None]:
    """The response body and, when binary outputs were asked for, the JSON header length."""
    rows = pred.labels.shape[0]
    out_json: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    entry: dict[str, Any]
    for name in req.outputs:
        if name == PREDICTION:
            assert pred.values is not None
            entry = {"name": PREDICTION, "datatype": "FP64", "shape": [rows]}
            if PREDICTION in req.binary_outputs:
                blob = pred.values.astype("<f8").tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = pred.values
        elif name == LABEL:
            labels = model.class_names_arr[pred.labels]
            entry = {"name": LABEL, "datatype": "BYTES", "shape": [rows]}
            if LABEL in req.binary_outputs:
                blob = b"".join(
                    struct.pack("<I", len(b)) + b for b in (s.encode() for s in labels.tolist())
                )
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = labels.tolist()
        else:
            entry = {
                "name": PROBABILITIES,
                "datatype": "FP32",
                "shape": list(pred.probabilities.shape),
            }
            if PROBABILITIES in req.binary_outputs:
                blob = pred.probabilities.astype("<f4").tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = pred.probabilities.reshape(-1)
        out_json.append(entry)
    header = orjson.dumps(
        {
            "model_name": model.name,
            "model_version": str(model.version),
            "id": request_id,
            "outputs": out_json,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
