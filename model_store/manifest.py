"""The manifest: a model version's passport, defined once as pydantic models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PiiPolicy(StrEnum):
    HASH = "hash"
    DROP = "drop"


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Literal["float32", "float64"] = "float32"
    min: float | None = Field(None, description="Smallest value seen in training.")
    max: float | None = Field(None, description="Largest value seen in training.")
    categories: list[float] | None = Field(None, description="Allowed values, when categorical.")
    pii: PiiPolicy | None = None
    description: str = ""


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field("label", description="Name of the ONNX output holding the label.")
    probabilities: str | None = Field(
        "probabilities", description="Name of the ONNX output holding class probabilities."
    )
    class_names: list[str] = Field(default_factory=list)
    class_values: list[int | str] = Field(
        default_factory=list, description="Raw label values the ONNX model emits, per class."
    )


class DataFingerprint(BaseModel):
    sha256: str
    rows: int
    columns: int


class ParityResult(BaseModel):
    passed: bool
    rows: int
    label_agreement: float
    max_abs_probability_diff: float
    tolerance: float


class FeatureImportance(BaseModel):
    """How much the model relies on each feature; weighs the drift verdict (README, "Drift")."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["permutation"] = "permutation"
    scoring: str = Field(description="scikit-learn scorer whose fall under a shuffle is measured.")
    n_repeats: int = Field(description="Shuffles per feature; the mean fall is kept.")
    random_state: int
    data: str = Field(description="Which labelled rows were shuffled.")
    rows: int
    values: dict[str, float] = Field(
        description="Share per feature: falls clipped at 0 and normalised to sum to 1."
    )

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0]))


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = 1
    name: str
    version: int
    created_at: datetime
    sha256: str
    task: Literal["classification"] = "classification"
    opset: int | None = None
    input_name: str = Field("input", description="Name of the ONNX input tensor [batch, n].")
    features: list[FeatureSpec]
    outputs: OutputSpec
    metadata_pii: dict[str, PiiPolicy] = Field(
        default_factory=dict, description="PII policy for caller metadata keys."
    )
    training_data: DataFingerprint | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    parity: ParityResult | None = None
    feature_importance: FeatureImportance | None = Field(
        None, description="Absent in manifests older than it and when no labelled rows existed."
    )
    description: str = ""

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if not names:
            raise ValueError("a model needs at least one feature")
        return features

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]
