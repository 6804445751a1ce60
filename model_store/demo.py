"""The deterministic demo models, from data sets that ship with scikit-learn (no download).

- ``breast-cancer``: binary classifier (logistic regression), the default and the quick start's.
- ``diabetes``: regressor (gradient boosting) of disease progression from ten numeric features.
- ``wine``: 3-class classifier (logistic regression) of cultivar from 13 numeric features.
- ``diabetes-mixed``: regressor (ridge) over the diabetes data with two categorical string
  features made from it: ``sex`` ("female"/"male" for the data set's codes 1/2; which code is
  which sex is not documented, the names only make the column readable) and ``age_band``
  ("<40", "40-55", "55+", from age in years); a ColumnTransformer one-hot encodes them with
  ``handle_unknown="ignore"`` (an unseen value sets no column), so it exercises the string path.

Each is trained with fixed seeds and splits: two registrations store the same bytes (sha256).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model_store.errors import RegistrationError
from model_store.manifest import Manifest
from model_store.registration import register_sklearn
from model_store.store import ModelStore

DEMO_MODEL = "breast-cancer"
DIABETES = "diabetes"
WINE = "wine"
DIABETES_MIXED = "diabetes-mixed"
SEED = 42
DIABETES_TARGET = "progression"
AGE_BANDS = ("<40", "40-55", "55+")


def snake_case(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def demo_data() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Features (snake_case names), integer targets, and class names (index = target value)."""
    raw = load_breast_cancer()
    x = pd.DataFrame(raw.data, columns=[snake_case(n) for n in raw.feature_names])
    return x, np.asarray(raw.target), [str(n) for n in raw.target_names]


def wine_data() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    raw = load_wine()
    x = pd.DataFrame(raw.data, columns=[snake_case(n) for n in raw.feature_names])
    return x, np.asarray(raw.target), [str(n) for n in raw.target_names]


def diabetes_data() -> tuple[pd.DataFrame, np.ndarray]:
    """The ten features in their original units (age in years, sex coded 1/2, bmi, bp, s1…s6)
    and disease progression one year later."""
    raw = load_diabetes(scaled=False)
    return pd.DataFrame(raw.data, columns=list(raw.feature_names)), np.asarray(raw.target)


def age_band(age: pd.Series) -> pd.Series:
    bands = np.where(age < 40, AGE_BANDS[0], np.where(age < 55, AGE_BANDS[1], AGE_BANDS[2]))
    return pd.Series(bands, index=age.index, dtype=object)


def diabetes_mixed_data() -> tuple[pd.DataFrame, np.ndarray]:
    """The diabetes data with ``sex`` and ``age_band`` as strings (first), the rest numeric."""
    x, y = diabetes_data()
    mixed = pd.DataFrame(
        {
            "sex": np.where(x["sex"] == 1.0, "female", "male").astype(object),
            "age_band": age_band(x["age"]),
        }
    )
    for col in ("bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"):
        mixed[col] = x[col]
    return mixed, y


def demo_pipeline(c: float = 1.0) -> Pipeline:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=c, max_iter=5000, random_state=SEED)),
        ]
    )


def mixed_pipeline(c: float = 1.0) -> Pipeline:
    numeric = ["bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    encode = ColumnTransformer(
        [
            (
                "categories",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ["sex", "age_band"],
            ),
            ("numbers", StandardScaler(), numeric),
        ]
    )
    return Pipeline([("encode", encode), ("reg", Ridge(alpha=1.0 / c))])


def holdout_mask(y: np.ndarray, *, stratify: bool = True) -> np.ndarray:
    idx = np.arange(len(y))
    _, test_idx = train_test_split(
        idx, test_size=0.25, random_state=SEED, stratify=y if stratify else None
    )
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    return mask


def train_demo(store: ModelStore, *, c: float = 1.0, promote: bool = True) -> Manifest:
    """Train, convert, parity-check and register the demo classifier; promote it by default."""
    return train_demo_model(store, DEMO_MODEL, c=c, promote=promote)


def _logistic(
    store: ModelStore, name: str, data: tuple[pd.DataFrame, np.ndarray, list[str]], c: float
) -> Manifest:
    """The demo classifiers: ``demo_pipeline`` on ``data`` (features, classes, class names)."""
    x, y, class_names = data
    mask = holdout_mask(y)
    pipe = demo_pipeline(c).fit(x.to_numpy()[~mask], y[~mask])
    return register_sklearn(
        store, name, pipe, x, y, holdout_mask=mask, class_names=class_names,
        description=DEMOS_HELP[name],
    )  # fmt: skip


def _breast_cancer(store: ModelStore, c: float) -> Manifest:
    return _logistic(store, DEMO_MODEL, demo_data(), c)


def _wine(store: ModelStore, c: float) -> Manifest:
    return _logistic(store, WINE, wine_data(), c)


def _diabetes(store: ModelStore, c: float) -> Manifest:
    x, y = diabetes_data()
    mask = holdout_mask(y, stratify=False)
    model: Any = GradientBoostingRegressor(
        n_estimators=100, max_depth=3, learning_rate=min(0.1 * c, 1.0), random_state=SEED
    ).fit(x.to_numpy()[~mask], y[~mask])
    return register_sklearn(
        store, DIABETES, model, x, y, holdout_mask=mask, target_name=DIABETES_TARGET,
        description=DEMOS_HELP[DIABETES],
    )  # fmt: skip


def _diabetes_mixed(store: ModelStore, c: float) -> Manifest:
    x, y = diabetes_mixed_data()
    mask = holdout_mask(y, stratify=False)
    pipe = mixed_pipeline(c).fit(x[~mask], y[~mask])
    return register_sklearn(
        store, DIABETES_MIXED, pipe, x, y, holdout_mask=mask, target_name=DIABETES_TARGET,
        description=DEMOS_HELP[DIABETES_MIXED],
    )  # fmt: skip


DEMOS_HELP = {
    DEMO_MODEL: "Logistic regression on scikit-learn's breast-cancer data (Wisconsin).",
    DIABETES: "Gradient-boosted regressor of diabetes progression (scikit-learn's diabetes data).",
    WINE: "Logistic regression of wine cultivar, 3 classes (scikit-learn's wine data).",
    DIABETES_MIXED: "Ridge regressor of diabetes progression over one-hot encoded categorical "
    "features (sex, age_band) and numeric ones.",
}
_DEMOS: dict[str, Callable[[ModelStore, float], Manifest]] = {
    DEMO_MODEL: _breast_cancer,
    DIABETES: _diabetes,
    WINE: _wine,
    DIABETES_MIXED: _diabetes_mixed,
}
DEMO_NAMES = tuple(_DEMOS)


def demo_frame(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A demo's features as requests send them (and as the log stores them) and its target:
    class indices for the classifiers, numbers for the regressors."""
    if name == DEMO_MODEL:
        x, y, _ = demo_data()
    elif name == WINE:
        x, y, _ = wine_data()
    elif name == DIABETES:
        x, y = diabetes_data()
    elif name == DIABETES_MIXED:
        x, y = diabetes_mixed_data()
    else:
        raise RegistrationError(f"no demo model {name!r}; demos: {', '.join(DEMO_NAMES)}")
    return x, y


def train_demo_model(
    store: ModelStore, name: str = DEMO_MODEL, *, c: float = 1.0, promote: bool = True
) -> Manifest:
    """Train, convert, parity-check and register the demo ``name`` (one of ``DEMO_NAMES``) as
    its next version; promote it by default. ``c`` scales regularisation: the classifiers' C,
    1/alpha of the ridge, the booster's learning rate (x 0.1), so a small ``c`` gives a weaker
    model to compare with."""
    train = _DEMOS.get(name)
    if train is None:
        raise RegistrationError(f"no demo model {name!r}; demos: {', '.join(DEMO_NAMES)}")
    manifest = train(store, c)
    if promote:
        store.set_alias(name, manifest.version)
    return manifest
