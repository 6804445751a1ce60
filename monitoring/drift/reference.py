"""A version's reference sample, and what drift needs of it alone, kept beside it.

``reference_stats.json`` (in the version's directory, next to ``reference.parquet``) holds what
each run would otherwise recompute from the reference: which columns have a finite value, the
validation rows' quality, and the CBPE calibration (isotonic step points and the reference's
expected metrics; one calibration per class of a multi-class classifier). It is written at the
first drift run of the version and read by the next. It names the sha256 of the reference it was
computed from (and the classes and seed it depends on): a cache of another reference, or one that
cannot be read, is recomputed and replaced, so it can be stale or missing but never give a
different answer than no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.log_columns import LABEL_COLUMN, PREDICTION_COLUMN
from model_store.store import ModelStore, write_atomic
from monitoring.drift import cbpe
from monitoring.drift.columns import Watched
from monitoring.drift.core import (
    DriftInputError,
    numeric_labelled,
    quality,
    regression_quality,
    validation_rows,
)

STATS_FILE = "reference_stats.json"
_FORMAT = 2  # 2: multi-class calibrations (per_class); a format-1 cache is recomputed
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReferenceStats:
    sha256: str
    classes: tuple[str, ...]
    seed: int
    finite: frozenset[str]
    """Numeric columns with a finite value somewhere in the reference."""
    quality: dict[str, float] | None
    """Accuracy and F1 (classifiers) or MAE, RMSE and R² (regressors) of the labelled
    validation rows (None: none are labelled)."""
    calibration: cbpe.Calibration | str
    """CBPE's calibration, or why there is none."""

    @classmethod
    def compute(
        cls, reference: pd.DataFrame, sha256: str, watched: Watched, seed: int
    ) -> ReferenceStats:
        class_names = list(watched.class_names)
        finite = {
            name
            for name in reference.columns
            if pd.api.types.is_numeric_dtype(reference[name])
            and np.isfinite(reference[name].to_numpy(dtype=np.float64)).any()
        }
        return cls(
            sha256=sha256,
            classes=tuple(class_names),
            seed=seed,
            finite=frozenset(finite),
            quality=_validation_quality(reference, watched),
            calibration=cbpe.calibrate(reference, class_names, watched.prediction, seed),
        )

    def to_json(self) -> dict[str, Any]:
        cal = self.calibration
        calibration: dict[str, Any] | str
        if isinstance(cal, str):
            calibration = cal
        else:
            calibration = {
                "isotonic": _steps(cal.calibrator),
                "rows": cal.rows,
                "reference": cal.reference,
                "per_class": [_steps(c) for c in cal.per_class],
            }
        return {
            "format": _FORMAT,
            "sha256": self.sha256,
            "classes": list(self.classes),
            "seed": self.seed,
            "finite": sorted(self.finite),
            "quality": self.quality,
            "calibration": calibration,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReferenceStats:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` for anything not written by
        :meth:`to_json` of this format."""
        if data["format"] != _FORMAT:
            raise ValueError(f"format {data['format']!r}, not {_FORMAT}")
        raw = data["calibration"]
        calibration: cbpe.Calibration | str
        if isinstance(raw, str):
            calibration = raw
        else:
            calibration = cbpe.Calibration(
                _calibrator(raw["isotonic"]),
                int(raw["rows"]),
                {str(k): float(v) for k, v in raw["reference"].items()},
                tuple(_calibrator(steps) for steps in raw["per_class"]),
            )
        quality = data["quality"]
        return cls(
            sha256=str(data["sha256"]),
            classes=tuple(str(c) for c in data["classes"]),
            seed=int(data["seed"]),
            finite=frozenset(str(c) for c in data["finite"]),
            quality=None if quality is None else {str(k): float(v) for k, v in quality.items()},
            calibration=calibration,
        )


def _steps(calibrator: cbpe.Calibrator) -> list[list[float]] | None:
    steps = calibrator.isotonic
    return None if steps is None else [steps[0].tolist(), steps[1].tolist()]


def _calibrator(steps: Any) -> cbpe.Calibrator:
    if steps is None:
        return cbpe.Calibrator(None)
    x, y = (np.asarray(s, np.float64) for s in steps)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("isotonic step points are not two arrays of one length")
    return cbpe.Calibrator((x, y))


@dataclass(frozen=True, slots=True)
class Reference:
    frame: pd.DataFrame
    stats: ReferenceStats


def _validation_quality(reference: pd.DataFrame, watched: Watched) -> dict[str, float] | None:
    # the same rows as core._performance compares the window's labels with
    validation = validation_rows(reference)
    if watched.regression:
        rows = numeric_labelled(validation, LABEL_COLUMN)
        if rows.empty:
            return None
        return regression_quality(rows[LABEL_COLUMN], rows[PREDICTION_COLUMN])
    validation = validation[validation[LABEL_COLUMN].isin(watched.class_names)]
    if validation.empty:
        return None
    return quality(validation[LABEL_COLUMN], validation[PREDICTION_COLUMN])


def load_reference(
    store: ModelStore, model: str, version: int, watched: Watched, seed: int
) -> Reference:
    """The reference sample of ``model`` ``version`` and its statistics, from the cache beside
    it when that was computed from these very bytes, else computed and cached."""
    path = store.reference_path(model, version)
    if not path.is_file():
        raise DriftInputError(
            f"{model} v{version} has no reference sample ({path}); register it with its "
            "training data to monitor drift"
        )
    try:
        data = path.read_bytes()
        frame = pq.read_table(pa.BufferReader(data)).to_pandas()
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise DriftInputError(f"reference sample {path} is unreadable: {exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    cache = path.parent / STATS_FILE
    stats = _cached(cache, sha256, list(watched.class_names), seed)
    if stats is None:
        stats = ReferenceStats.compute(frame, sha256, watched, seed)
        _store(cache, stats)
    return Reference(frame, stats)


def _cached(path: Path, sha256: str, class_names: list[str], seed: int) -> ReferenceStats | None:
    try:
        stats = ReferenceStats.from_json(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("reference statistics %s are unreadable, recomputing: %s", path, exc)
        return None
    if (stats.sha256, stats.classes, stats.seed) != (sha256, tuple(class_names), seed):
        log.info("reference statistics %s are of another reference, recomputing", path)
        return None
    return stats


def _store(path: Path, stats: ReferenceStats) -> None:
    try:
        write_atomic(path, json.dumps(stats.to_json(), indent=1, allow_nan=False).encode())
    except (OSError, ValueError) as exc:  # a read-only store still gets its drift analysed
        log.warning("reference statistics could not be kept in %s: %s", path, exc)
