"""The naive baseline: what most tutorials deploy. Kept deliberately plain; do not optimise it.

FastAPI with a plain ``def`` endpoint (run in the thread pool), one pydantic model per row with the
30 demo features as float fields, onnxruntime on the demo model file, no logging, no metrics. It
accepts the same body as Vigil's V1 predict, so the same wrk script drives both.

    NAIVE_MODEL_PATH=<store>/breast-cancer/1/model.onnx \\
        python -m uvicorn --factory loadtests.naive_baseline:create_app --port 8001
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel, create_model

from model_store.demo import demo_data

FEATURES: list[str] = list(demo_data()[0].columns)
CLASS_NAMES: list[str] = demo_data()[2]

# Built from the feature list so the field names match the demo data exactly.
Row: type[BaseModel] = create_model("Row", **dict.fromkeys(FEATURES, (float, ...)))  # type: ignore[call-overload]


class PredictRequest(BaseModel):
    instances: list[Row]


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def create_app(model_path: str | None = None) -> FastAPI:
    path = model_path or os.environ["NAIVE_MODEL_PATH"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    app = FastAPI(title="naive baseline")

    @app.post("/v1/models/{model}/predict", response_model=PredictResponse)
    def predict(model: str, request: PredictRequest) -> Any:
        x = np.array(
            [[getattr(row, name) for name in FEATURES] for row in request.instances],
            dtype=np.float32,
        )
        labels, probabilities = session.run(None, {input_name: x})
        return PredictResponse(
            predictions=[
                Prediction(
                    label=CLASS_NAMES[int(label)],
                    probabilities=dict(zip(CLASS_NAMES, map(float, proba), strict=True)),
                )
                for label, proba in zip(labels, probabilities, strict=True)
            ]
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("NAIVE_PORT", "8001")))
