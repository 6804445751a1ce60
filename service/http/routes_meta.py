"""Health, metadata and metrics routes (V2 protocol and V1 model listing)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service import __version__
from service.core.codec_v2 import LABEL, PREDICTION, PROBABILITIES
from service.core.dataplane import parse_version
from service.core.loaded_model import LoadedModel
from service.errors import ModelNotReady, NotFound
from service.http.deps import runtime
from service.http.errors import error_response

router = APIRouter()


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.get("/v2", tags=["v2"], summary="Server metadata")
async def server_metadata() -> Response:
    return _json({"name": "vigil", "version": __version__, "extensions": ["binary_tensor_data"]})


@router.get("/v2/health/live", tags=["v2"], summary="Liveness")
async def live() -> Response:
    return _json({"live": True})


@router.get("/v2/health/ready", tags=["v2"], summary="Readiness")
async def ready(request: Request) -> Response:
    rt = runtime(request)
    models_ready, models = rt.registry.readiness()
    log_ok, log_reason = rt.dataplane.iolog.health()
    is_ready = models_ready and log_ok and not getattr(request.app.state, "draining", False)
    body: dict[str, Any] = {"ready": is_ready, "models": models, "iolog": log_reason}
    if not is_ready:
        reasons = []
        if not models_ready:
            reasons.append("no servable version for some model" if models else "no model loaded")
        if not log_ok:
            reasons.append(f"I/O log: {log_reason}")
        if getattr(request.app.state, "draining", False):
            reasons.append("shutting down")
        body["error"] = "not ready: " + "; ".join(reasons)
    return _json(body, 200 if is_ready else 503)


async def _model(request: Request, model: str, version: str | None) -> LoadedModel:
    return await runtime(request).registry.aget(model, parse_version(version))


def _metadata(request: Request, m: LoadedModel) -> dict[str, Any]:
    versions = runtime(request).registry.store.versions(m.name)
    dtype = "FP32" if m.dtype.__name__ == "float32" else "FP64"
    if m.columns:
        inputs = [
            {
                "name": f.name,
                "datatype": "BYTES" if f.categorical else dtype,
                "shape": [-1, 1],
            }
            for f in m.manifest.features
        ]
    else:
        inputs = [{"name": m.input_name, "datatype": dtype, "shape": [-1, m.n_features]}]
    params: dict[str, Any] = {
        "version": str(m.version),
        "sha256": m.sha256,
        "task": m.manifest.task,
        "feature_names": list(m.feature_names),
    }
    if m.regression:
        outputs = [{"name": PREDICTION, "datatype": "FP64", "shape": [-1]}]
        params["target"] = m.manifest.outputs.target
    else:
        outputs = [
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(m.class_names)]},
        ]
        params["class_names"] = list(m.class_names)
    return {
        "name": m.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": params,
    }


@router.get("/v2/models/{model}", tags=["v2"], summary="Model metadata")
async def model_metadata(request: Request, model: str) -> Response:
    return _json(_metadata(request, await _model(request, model, None)))


@router.get("/v2/models/{model}/versions/{version}", tags=["v2"], summary="Version metadata")
async def version_metadata(request: Request, model: str, version: str) -> Response:
    return _json(_metadata(request, await _model(request, model, version)))


async def _ready(request: Request, model: str, version: str | None) -> Response:
    try:
        m = await _model(request, model, version)
    except ModelNotReady as exc:
        return error_response(503, exc.message)
    return _json({"name": m.name, "version": str(m.version), "ready": True})


@router.get("/v2/models/{model}/ready", tags=["v2"], summary="Model readiness")
async def model_ready(request: Request, model: str) -> Response:
    return await _ready(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/ready", tags=["v2"], summary="Version readiness")
async def version_ready(request: Request, model: str, version: str) -> Response:
    return await _ready(request, model, version)


@router.get("/v1/models", tags=["models"], summary="Models served, with their versions")
async def list_models(request: Request) -> Response:
    rt = runtime(request)
    _, report = rt.registry.readiness()
    return _json({"models": report})


@router.get("/v1/models/{model}", tags=["models"], summary="Manifest of the served version")
async def model_manifest(request: Request, model: str) -> Response:
    m = await _model(request, model, None)
    return Response(m.manifest.model_dump_json(), media_type="application/json")


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    rt = runtime(request)
    if not rt.metrics.enabled:
        raise NotFound("metrics are disabled (VIGIL_METRICS_ENABLED=false)")
    return Response(rt.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
