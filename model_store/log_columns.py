"""Column names written beside a model's features: in the I/O log and in reference.parquet.

A feature may not take one of these names, or it would overwrite (or be overwritten by) that
column. They live here, at the bottom of the import graph, so that registration (model_store)
refuses them and the log schema (``service.iolog.schema``) is built from the same names.
"""

from __future__ import annotations

from collections.abc import Iterable

from model_store.errors import RegistrationError

PROBA_PREFIX = "proba_"  # one column per class: proba_<class>, in the log and the reference
LOG_COLUMNS = frozenset(
    {
        "request_id", "row", "received_at", "model", "version", "date", "sha256", "endpoint",
        "status", "latency_s", "prediction", "metadata", "label",
        "role",  # primary | shadow | canary, when rollouts log beside the served version
    }
)  # fmt: skip
LABEL_COLUMN = "target"  # reference.parquet: the true label, the prediction, train/validation
PREDICTION_COLUMN = "prediction"
SPLIT_COLUMN = "split"
REFERENCE_COLUMNS = frozenset({LABEL_COLUMN, PREDICTION_COLUMN, SPLIT_COLUMN})
RESERVED_COLUMNS = LOG_COLUMNS | REFERENCE_COLUMNS


def proba_column(class_name: str) -> str:
    return f"{PROBA_PREFIX}{class_name}"


def reserved_names(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that a feature may not take, sorted."""
    return sorted({n for n in names if n in RESERVED_COLUMNS or n.startswith(PROBA_PREFIX)})


def check_feature_names(names: Iterable[str]) -> None:
    """Raise if a feature name is a reserved column name or starts with ``proba_``."""
    clashing = reserved_names(names)
    if clashing:
        raise RegistrationError(
            f"feature names {clashing} are reserved for columns of the I/O log and reference "
            f"data ({', '.join(sorted(RESERVED_COLUMNS))}, and the prefix {PROBA_PREFIX!r}); "
            "rename these features"
        )
