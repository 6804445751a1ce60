"""What drift watches of a model, by its kind: the one place the drift job branches on the task
(classification or regression) and on each feature's kind (numeric or categorical).

- Features: numeric ones get the numeric test (Wasserstein by default), categorical ones the
  categorical test (Jensen-Shannon); drift.html's Evidently ``DataDefinition`` lists them so.
- Prediction drift watches the positive class's probability of a binary classifier (as before),
  the predicted class of a multi-class classifier (categorical: the probability of one class of
  many says little), and the predicted value of a regressor (numeric).
- Performance: accuracy and macro F1 for classifiers, MAE, RMSE and R² for regressors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model_store.log_columns import PREDICTION_COLUMN, proba_column
from model_store.manifest import Manifest

Kind = Literal["numeric", "categorical"]
NUMERIC: Kind = "numeric"
CATEGORICAL: Kind = "categorical"
CLASSIFICATION_METRICS = ("accuracy", "f1_macro")
REGRESSION_METRICS = ("mae", "rmse", "r2")
ERROR_METRICS = ("mae", "rmse")
"""Regression metrics whose relative rise flags model drift (R² is reported, not judged: it
falls when a window's targets spread less, with the model's errors unchanged)."""


class ManifestKindError(ValueError):
    """The manifest does not say enough to watch the model (no classes of a classifier)."""


@dataclass(frozen=True, slots=True)
class Watched:
    task: Literal["classification", "regression"]
    class_names: tuple[str, ...]
    kinds: dict[str, Kind]
    """Every feature's kind, in manifest order."""
    categories: dict[str, frozenset[str]]
    """The categories seen in training, per categorical feature."""
    prediction: str
    """The column watched for prediction drift."""
    prediction_kind: Kind

    @classmethod
    def of(cls, manifest: Manifest) -> Watched:
        kinds: dict[str, Kind] = {}
        categories: dict[str, frozenset[str]] = {}
        for spec in manifest.features:
            kinds[spec.name] = CATEGORICAL if spec.kind == "categorical" else NUMERIC
            if spec.kind == "categorical":
                categories[spec.name] = frozenset(str(c) for c in spec.categories or [])
        names = tuple(manifest.outputs.class_names)
        if manifest.task == "regression":
            return cls("regression", (), kinds, categories, PREDICTION_COLUMN, NUMERIC)
        if not names:
            raise ManifestKindError(f"the manifest of {manifest.name} names no classes")
        if len(names) > 2:
            return cls("classification", names, kinds, categories, PREDICTION_COLUMN, CATEGORICAL)
        watched = proba_column(names[1] if len(names) > 1 else names[0])
        return cls("classification", names, kinds, categories, watched, NUMERIC)

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def metrics(self) -> tuple[str, ...]:
        return REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS

    @property
    def numeric(self) -> list[str]:
        return [name for name, kind in self.kinds.items() if kind == NUMERIC]

    @property
    def categorical(self) -> list[str]:
        return [name for name, kind in self.kinds.items() if kind == CATEGORICAL]

    def kind(self, column: str) -> Kind:
        if column == self.prediction:
            return self.prediction_kind
        return self.kinds.get(column, NUMERIC)
