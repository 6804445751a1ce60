"""The OpenAPI document, with the real feature names of the models this process serves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.runtime import LoadedModel

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, "content": {"application/json": {"schema": _ERROR}}}
    for code, desc in (
        (400, "Malformed request (JSON syntax, headers)"),
        (401, "Missing or wrong admin token"),
        (404, "Unknown model, version or route"),
        (409, "Conflicting state change"),
        (413, "Body or batch too large"),
        (415, "Unsupported content type or encoding"),
        (422, "Request does not match the model's schema"),
        (503, "Model not ready, log unavailable, or timeout"),
    )
}
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
                            "type": "object",
                            "required": ["label", "probabilities"],
                            "properties": {
                                "label": {"type": "string"},
                                "probabilities": {
                                    "type": "object",
                                    "additionalProperties": {"type": "number"},
                                },
                            },
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
        prop: dict[str, Any] = {"type": "number", "description": f.description or f.name}
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
                        "id": {"type": "string", "minLength": 1, "maxLength": 128},
                        "metadata": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "maxLength": 1024},
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
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    names = sorted({n for m in models for n in m.feature_names})
    return {
        "required": True,
        "description": "One FP32/FP64 tensor [batch, n_features], or one tensor per feature "
        f"({', '.join(names[:8])}{', …' if len(names) > 8 else ''}).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {"type": "array", "minItems": 1, "items": tensor},
                        "outputs": {"type": "array", "items": {"type": "object"}},
                        "parameters": {"type": "object"},
                    },
                }
            }
        },
    }


def build_openapi(app: FastAPI, models: list[LoadedModel], max_rows: int) -> dict[str, Any]:
    doc = get_openapi(
        title="Vigil",
        version=app.version,
        description="Real-time inference for tabular ONNX models, with every prediction logged.",
        routes=app.routes,
    )
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
