"""The OpenAPI document, with the real feature names of the models this process serves."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from model_store.manifest import MAX_CATEGORY_CHARS, Manifest
from service.core.codec_v2 import model_outputs
from service.core.loaded_model import LoadedModel
from service.core.validation import FLOAT32_MAX, MAX_METADATA_KEYS, MAX_METADATA_VALUE

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_ERROR_DESCRIPTIONS = {
    400: "Malformed request (JSON syntax, headers)",
    401: "Missing or wrong bearer token (admin API; feedback when VIGIL_FEEDBACK_TOKEN is set)",
    404: "Unknown model, version or route; admin API disabled",
    409: "Conflicting state change",
    413: "Body or batch too large",
    415: "Unsupported content type or encoding",
    422: "Request does not match the model's schema",
    503: "Model not ready, log unavailable, or timeout",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``{"error": "..."}`` responses for the given statuses, for a route's ``responses=``."""
    return {
        code: {
            "description": _ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for code in codes
    }


# What a prediction or feedback request can be answered with besides 200.
ERROR_RESPONSES = error_responses(400, 404, 413, 415, 422, 503)
FEEDBACK_ERROR_RESPONSES = error_responses(400, 401, 404, 413, 415, 422, 503)
ADMIN_ERROR_RESPONSES = error_responses(400, 401, 404, 409, 413, 415, 422, 503)
ADMIN_SECURITY = "adminBearer"
V1_RESPONSE: dict[str, Any] = {
    "description": "Predictions, one per instance",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "version", "request_id", "predictions"],
                "properties": {
                    "model": {"type": "string"},
                    "version": {"type": "integer"},
                    "request_id": {"type": "string"},
                    "predictions": {
                        "type": "array",
                        "items": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "title": "classification",
                                    "required": ["label", "probabilities"],
                                    "properties": {
                                        "label": {"type": "string"},
                                        "probabilities": {
                                            "type": "object",
                                            "additionalProperties": {"type": "number"},
                                        },
                                    },
                                },
                                {
                                    "type": "object",
                                    "title": "regression",
                                    "required": ["prediction"],
                                    "properties": {"prediction": {"type": "number"}},
                                },
                            ]
                        },
                    },
                },
            }
        }
    },
}
_TENSOR_OUT = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
V2_RESPONSE: dict[str, Any] = {
    "description": "V2 inference response",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model_name", "outputs"],
                "properties": {
                    "model_name": {"type": "string"},
                    "model_version": {"type": "string"},
                    "id": {"type": "string"},
                    "outputs": {"type": "array", "items": _TENSOR_OUT},
                },
            }
        }
    },
}


def _instance_schema(model: LoadedModel) -> dict[str, Any]:
    props = {}
    for f in model.manifest.features:
        if f.categorical:
            props[f.name] = {
                "type": "string",
                "description": f.description or f.name,
                "minLength": 0 if "" in (f.categories or []) else 1,
                "maxLength": MAX_CATEGORY_CHARS,
                # unseen values are served too (the pipeline decides); these are training's
                "examples": list(f.categories or [])[:20],
            }
            continue
        prop: dict[str, Any] = {"type": "number", "description": f.description or f.name}
        if model.dtype is np.float32:
            prop["minimum"], prop["maximum"] = -FLOAT32_MAX, FLOAT32_MAX
        if f.min is not None and f.max is not None:
            prop["example"] = round((f.min + f.max) / 2, 4)
        if f.categories:
            prop["enum"] = f.categories
        props[f.name] = prop
    return {
        "type": "object",
        "title": f"{model.name} instance",
        "required": list(model.feature_names),
        "additionalProperties": False,
        "properties": props,
    }


def _v1_request(models: list[LoadedModel], max_rows: int) -> dict[str, Any]:
    schemas = [_instance_schema(m) for m in models]
    items: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "additionalProperties": False,
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_rows,
                            "items": items,
                        },
                        # null means "absent" for the optional fields, as many clients send it.
                        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": 128},
                        "metadata": {
                            "type": ["object", "null"],
                            "maxProperties": MAX_METADATA_KEYS,
                            "propertyNames": {"maxLength": 128},
                            "additionalProperties": {
                                "type": "string",
                                "maxLength": MAX_METADATA_VALUE,
                            },
                        },
                    },
                }
            }
        },
    }


def _v2_request(models: list[LoadedModel]) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {"type": "integer", "minimum": 0},
            },
            "datatype": {"type": "string", "enum": ["FP32", "FP64", "BYTES"]},
            "data": {"type": "array"},
            "parameters": {"type": ["object", "null"]},
        },
    }
    output_names = sorted({o for m in models for o in model_outputs(m)})
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "enum": output_names},
            "parameters": {"type": ["object", "null"]},
        },
    }
    names = sorted({n for m in models for n in m.feature_names})
    return {
        "required": True,
        "description": "One FP32/FP64 tensor [batch, n_features], or one tensor per feature "
        f"({', '.join(names[:8])}{', …' if len(names) > 8 else ''}); a model with categorical "
        "features takes one tensor per feature, BYTES for the categorical ones.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        # null means "absent" for the optional fields, as many clients send it.
                        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": 128},
                        "inputs": {"type": "array", "minItems": 1, "items": tensor},
                        "outputs": {"type": ["array", "null"], "items": output},
                        "parameters": {"type": ["object", "null"]},
                    },
                }
            }
        },
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_ANY_OBJ: dict[str, Any] = {"type": "object"}
_TENSOR_META = _obj({"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": _INT}})
_V2_METADATA = _obj(
    {
        "name": _STR,
        "versions": {"type": "array", "items": _STR},
        "platform": _STR,
        "inputs": {"type": "array", "items": _TENSOR_META},
        "outputs": {"type": "array", "items": _TENSOR_META},
    },
    parameters=_ANY_OBJ,
)
_READY = _obj({"name": _STR, "version": _STR, "ready": _BOOL})
_NULLABLE_INT: dict[str, Any] = {"type": ["integer", "null"]}
_MANIFEST_REF: dict[str, Any] = {"$ref": "#/components/schemas/Manifest"}
# 200 bodies of routes that build their Response by hand (FastAPI cannot infer them), and the
# errors each can answer besides the 4xx FastAPI already lists.
_DOCUMENTED: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "/v2": (_obj({"name": _STR, "version": _STR, "extensions": {"type": "array"}}), ()),
    "/v2/health/live": (_obj({"live": _BOOL}), ()),
    "/v2/health/ready": (_obj({"ready": _BOOL, "models": _ANY_OBJ, "iolog": _STR}), (503,)),
    "/v2/models/{model}": (_V2_METADATA, (404, 503)),
    "/v2/models/{model}/versions/{version}": (_V2_METADATA, (404, 503)),
    "/v2/models/{model}/ready": (_READY, (404, 503)),
    "/v2/models/{model}/versions/{version}/ready": (_READY, (404, 503)),
    "/v1/models": (_obj({"models": _ANY_OBJ}), ()),
    "/v1/models/{model}": (_MANIFEST_REF, (404, 503)),
    "/v1/admin/models/{model}/promote": (
        _obj({"model": _STR, "serving_version": _INT, "previous_version": _NULLABLE_INT}),
        (),
    ),
    "/v1/admin/models/{model}/rollback": (_obj({"model": _STR, "serving_version": _INT}), ()),
    "/v1/admin/models/{model}/versions/{version}/load": (
        _obj({"model": _STR, "version": _INT, "loaded": _BOOL}),
        (),
    ),
    "/v1/admin/models/{model}/versions/{version}/unload": (
        _obj({"model": _STR, "version": _INT, "loaded": _BOOL}),
        (),
    ),
    "/v1/admin/reload": (_obj({"models": _ANY_OBJ}), ()),
}


def _document_by_hand(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    manifest = Manifest.model_json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    schemas.update(manifest.pop("$defs", {}))
    schemas["Manifest"] = manifest
    # Path parameters are plain strings: FastAPI's validation 422 cannot happen on these routes.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["components"]["securitySchemes"] = {
        ADMIN_SECURITY: {
            "type": "http",
            "scheme": "bearer",
            "description": "VIGIL_ADMIN_TOKEN; without it the admin API answers 404.",
        }
    }
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if "422" in responses and "$ref" in str(responses["422"]):
                del responses["422"]
            ok, codes = _DOCUMENTED.get(path, (None, ()))
            if ok is not None:
                responses["200"] = _ok(ok)
            for code, spec in error_responses(*codes).items():
                responses.setdefault(str(code), spec)
            if path.startswith("/v1/admin/"):
                op["security"] = [{ADMIN_SECURITY: []}]


def build_openapi(app: FastAPI, models: list[LoadedModel], max_rows: int) -> dict[str, Any]:
    doc = get_openapi(
        title="Vigil",
        version=app.version,
        description="Real-time inference for tabular ONNX models, with every prediction logged.",
        routes=app.routes,
    )
    _document_by_hand(doc)
    if not models:
        return doc
    names = sorted({m.name for m in models})
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param.get("name") == "model" and param.get("in") == "path":
                    param["schema"] = {"type": "string", "enum": names}
            if path.endswith("/predict"):
                op["requestBody"] = _v1_request(models, max_rows)
            elif path.endswith("/infer"):
                op["requestBody"] = _v2_request(models)
    return doc
