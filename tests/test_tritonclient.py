"""The official Triton HTTP client works against Vigil, with and without binary tensors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from model_store.demo import DEMO_MODEL
from tests.servers import VigilServer


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_round_trip(
    vigil_server: Callable[..., VigilServer],
    demo: tuple,
    binary: bool,  # type: ignore[type-arg]
) -> None:
    server = vigil_server()
    x, _, names = demo
    client = httpclient.InferenceServerClient(
        server.url.removeprefix("http://"), network_timeout=10
    )
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(DEMO_MODEL)
    meta = client.get_model_metadata(DEMO_MODEL)
    assert meta["inputs"][0]["shape"] == [-1, 30]

    batch = x.to_numpy(dtype=np.float32)[:8]
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer(DEMO_MODEL, [inp], outputs=outputs, request_id="triton-1")
    proba = result.as_numpy("probabilities")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert proba.shape == (8, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert labels == [names[i] for i in proba.argmax(axis=1)]
    assert result.get_response()["id"] == "triton-1"

    with pytest.raises(InferenceServerException, match="not served"):
        client.infer("no-such-model", [inp])
