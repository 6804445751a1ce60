"""A real candidate that fails at run time on part of the input space, for rollout tests.

The served demo model's graph, with its probabilities made NaN where ``mean_radius`` is at most
``threshold`` (``0 * log(mean_radius - threshold)`` added to them): onnxruntime answers, but with
non-finite numbers, which the data plane refuses to serve. The smoke prediction (the training
midpoints, mean_radius 17.5) still passes, so the store and the registry accept the version.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store.manifest import Manifest
from model_store.store import REFERENCE_FILE, ModelStore

THRESHOLD = 13.0  # about 45 % of the demo rows have a smaller mean_radius


def register_faulty(store: ModelStore, model: str, base: int, threshold: float = THRESHOLD) -> int:
    """Register a copy of ``base`` that answers NaN where mean_radius <= threshold."""
    base_dir = store.version_dir(model, base)
    graph_model = onnx.load(str(base_dir / "model.onnx"))
    graph = graph_model.graph
    proba = next(o for o in graph.output if o.name == "probabilities")
    for node in graph.node:  # the classifier now writes to an inner name
        node.output[:] = ["proba_raw" if o == proba.name else o for o in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0], np.int64), "f_start"),
            numpy_helper.from_array(np.array([1], np.int64), "f_end"),
            numpy_helper.from_array(np.array([1], np.int64), "f_axis"),
            numpy_helper.from_array(np.array([threshold], np.float32), "f_threshold"),
            numpy_helper.from_array(np.array([0.0], np.float32), "f_zero"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", ["input", "f_start", "f_end", "f_axis"], ["f_radius"]),
            helper.make_node("Sub", ["f_radius", "f_threshold"], ["f_shifted"]),
            helper.make_node("Log", ["f_shifted"], ["f_log"]),  # NaN below, -inf at threshold
            helper.make_node("Mul", ["f_log", "f_zero"], ["f_poison"]),  # 0, or NaN
            helper.make_node("Add", ["proba_raw", "f_poison"], ["probabilities"]),
        ]
    )
    assert proba.type.tensor_type.elem_type == TensorProto.FLOAT
    onnx.checker.check_model(graph_model)
    data = graph_model.SerializeToString()
    manifest = Manifest.model_validate_json((base_dir / "manifest.json").read_bytes())

    def build(version: int, sha256: str) -> Manifest:
        return manifest.model_copy(
            update={"version": version, "sha256": sha256, "created_at": datetime.now(UTC)}
        )

    def reference(path: object) -> None:
        shutil.copy(base_dir / REFERENCE_FILE, str(path))

    return store.register(model, data, build, reference).version
