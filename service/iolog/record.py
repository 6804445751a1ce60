"""What the data plane hands to the I/O log: one record per request (rows inside as arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class IORecord:
    """A served request; arrays are per row. The log applies PII policy before writing."""

    request_id: str
    received_at: float  # unix seconds, UTC
    model: str
    version: int
    sha256: str
    endpoint: str
    status: int
    latency_s: float
    feature_names: tuple[str, ...]
    inputs: np.ndarray  # float64 [rows, n_features]; object (floats and str) with categoricals
    class_names: tuple[str, ...]
    labels: np.ndarray  # int64 class indices [rows]
    probabilities: np.ndarray  # float32 [rows, n_classes]
    metadata: dict[str, str]
    # primary | shadow | canary (service/iolog/schema.py ROLES); who answered, in a rollout
    role: str = "primary"
    values: np.ndarray | None = None  # a regressor's predictions, float64 [rows]
    categorical: tuple[int, ...] = ()  # indices of the string features in ``inputs``

    @property
    def rows(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(slots=True)
class RejectedRecord:
    """A request answered with a 4xx (or 503): the log keeps its error and, as its PII policy
    allows, an excerpt of the body or only its size and keyed hash (service/iolog/pii.py)."""

    request_id: str
    received_at: float
    model: str
    version: str
    endpoint: str
    status: int
    error: str
    body: bytes  # as received (decompressed); empty when it was never read
