"""The deterministic demo model: ``breast-cancer``, from scikit-learn's bundled data set."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from model_store.manifest import Manifest
from model_store.registration import register_sklearn
from model_store.store import ModelStore

DEMO_MODEL = "breast-cancer"
SEED = 42


def snake_case(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def demo_data() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Features (snake_case names), integer targets, and class names (index = target value)."""
    raw = load_breast_cancer()
    x = pd.DataFrame(raw.data, columns=[snake_case(n) for n in raw.feature_names])
    return x, np.asarray(raw.target), [str(n) for n in raw.target_names]


def demo_pipeline(c: float = 1.0) -> Pipeline:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(C=c, max_iter=5000, random_state=SEED)),
        ]
    )


def holdout_mask(y: np.ndarray) -> np.ndarray:
    idx = np.arange(len(y))
    _, test_idx = train_test_split(idx, test_size=0.25, random_state=SEED, stratify=y)
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    return mask


def train_demo(store: ModelStore, *, c: float = 1.0, promote: bool = True) -> Manifest:
    """Train, convert, parity-check and register the demo classifier; promote it by default."""
    x, y, class_names = demo_data()
    mask = holdout_mask(y)
    pipe = demo_pipeline(c).fit(x.to_numpy()[~mask], y[~mask])
    manifest = register_sklearn(
        store,
        DEMO_MODEL,
        pipe,
        x,
        y,
        holdout_mask=mask,
        class_names=class_names,
        description="Logistic regression on scikit-learn's breast-cancer data (Wisconsin).",
    )
    if promote:
        store.set_alias(DEMO_MODEL, manifest.version)
    return manifest
