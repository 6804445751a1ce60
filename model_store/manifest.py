"""The manifest: a model version's passport, defined once as pydantic models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2


class PiiPolicy(StrEnum):
    HASH = "hash"
    DROP = "drop"


Task = Literal["classification", "regression"]
FeatureKind = Literal["numeric", "categorical"]
InputMode = Literal["tensor", "columns"]
# Longest category value a request may send (characters); longer ones are refused, not logged.
MAX_CATEGORY_CHARS = 256


class FeatureSpec(BaseModel):
    """One input column. Numeric: float32/float64 with the training range (and, optionally, the
    numeric codes allowed). Categorical: strings, with the values and shares seen in training;
    other values are served (the pipeline's ``handle_unknown`` decides) and counted."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: FeatureKind = "numeric"
    dtype: Literal["float32", "float64", "string"] = "float32"
    min: float | None = Field(None, description="Smallest value seen in training.")
    max: float | None = Field(None, description="Largest value seen in training.")
    categories: list[float] | list[str] | None = Field(
        None,
        description="Numeric: the allowed codes. Categorical: the values seen in training, sorted.",
    )
    frequencies: dict[str, float] | None = Field(
        None, description="Categorical: each training value's share of the rows (sums to 1)."
    )
    pii: PiiPolicy | None = None
    description: str = ""

    @model_validator(mode="after")
    def _kind_matches_dtype(self) -> FeatureSpec:
        if self.kind == "categorical":
            if self.dtype != "string":
                raise ValueError(f"feature {self.name!r}: a categorical feature has dtype string")
            if self.categories is not None and not all(isinstance(c, str) for c in self.categories):
                raise ValueError(f"feature {self.name!r}: categories must be strings")
        elif self.dtype == "string":
            raise ValueError(f"feature {self.name!r}: a numeric feature has dtype float32/64")
        elif self.categories is not None and not all(
            isinstance(c, float | int) for c in self.categories
        ):
            raise ValueError(f"feature {self.name!r}: numeric categories must be numbers")
        return self

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"


class OutputSpec(BaseModel):
    """Classification: label and probabilities outputs and the classes. Regression: the output
    holding the predicted value, the target's name and its range in training."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field("label", description="Name of the ONNX output holding the label.")
    probabilities: str | None = Field(
        "probabilities", description="Name of the ONNX output holding class probabilities."
    )
    class_names: list[str] = Field(default_factory=list)
    class_values: list[int | str] = Field(
        default_factory=list, description="Raw label values the ONNX model emits, per class."
    )
    prediction: str | None = Field(
        None, description="Regression: name of the ONNX output holding the predicted value."
    )
    target: str | None = Field(None, description="Regression: the target's name.")
    min: float | None = Field(None, description="Regression: smallest target seen in training.")
    max: float | None = Field(None, description="Regression: largest target seen in training.")


class DataFingerprint(BaseModel):
    sha256: str
    rows: int
    columns: int


class ParityResult(BaseModel):
    """Classification: labels equal and probabilities within ``tolerance``. Regression: every
    prediction within ``tolerance`` relative to itself plus ``tolerance`` times the target's
    training span (``absolute_tolerance``)."""

    passed: bool
    rows: int
    label_agreement: float | None = None
    max_abs_probability_diff: float | None = None
    tolerance: float
    max_abs_prediction_diff: float | None = None
    max_rel_prediction_diff: float | None = None
    absolute_tolerance: float | None = None


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

    schema_version: int = Field(
        SCHEMA_VERSION, description="1: a classifier over numeric features; 2: model kinds."
    )
    name: str
    version: int
    created_at: datetime
    sha256: str
    task: Task = "classification"
    opset: int | None = None
    input_name: str = Field("input", description="Name of the ONNX input tensor [batch, n].")
    input_mode: InputMode = Field(
        "tensor",
        description="tensor: one [batch, n] float input (all-numeric models); columns: one "
        "[batch, 1] input per feature, named by it (float or string), for categorical features.",
    )
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

    @model_validator(mode="after")
    def _kinds_consistent(self) -> Manifest:
        if self.input_mode == "tensor" and any(f.categorical for f in self.features):
            raise ValueError("categorical features need input_mode 'columns'")
        if self.task == "regression" and not self.outputs.prediction:
            raise ValueError("a regression manifest names its prediction output")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def has_categorical(self) -> bool:
        return any(f.categorical for f in self.features)
