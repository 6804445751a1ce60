"""The comparison and gate verdicts of a running rollout, read from the I/O log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from model_store.errors import StoreError
from model_store.log_columns import proba_column
from model_store.rollout import RolloutState
from model_store.store import ModelStore
from service.iolog.reader import read_predictions, read_rejected
from service.offline.compare import Task, compare
from service.offline.gates import decide, evaluate_gates
from service.settings import Settings

log = logging.getLogger("vigil.rollout")
COMPARED_COLUMNS = ["received_at", "version", "status", "latency_s", "prediction", "role"]


def read_rollout_window(settings: Settings, state: RolloutState) -> pd.DataFrame:
    """Logged rows of both versions since the rollout started, failed requests included.

    The one place that reads the log for rollouts (blocking: call it in a thread); swap it for
    the streaming reader when there is one. Rejected requests of either version become rows
    with their status so that the comparison counts them; there is no latency or prediction.
    """
    versions = {state.primary_version, state.candidate_version}
    # read_predictions de-duplicates on (request_id, row, role): shadow rows stay beside their
    # primary rows.
    rows = read_predictions(
        settings, state.model, since=state.started_at, columns=_columns(settings, state),
        ordered=False,  # the comparison aggregates: no order needed
    )  # fmt: skip
    rows = rows[rows["version"].isin(versions)]
    rejected = read_rejected(settings, since=state.started_at)
    rejected = rejected[
        (rejected["model"] == state.model) & rejected["version"].isin({str(v) for v in versions})
    ]
    if rejected.empty:
        return rows
    failed = pd.DataFrame(
        {
            "request_id": rejected["request_id"],
            "row": 0,
            "received_at": rejected["received_at"],
            "version": rejected["version"].astype("int64"),
            "status": rejected["status"].astype("int64"),
        }
    )
    return pd.concat([rows, failed], ignore_index=True, sort=False)


def _columns(settings: Settings, state: RolloutState) -> list[str] | None:
    """What the comparison reads: not the features (most of a row). None (every column) if a
    version's manifest cannot be read, so that a damaged manifest costs speed, not numbers."""
    store = ModelStore(settings.model_store)
    try:
        classes = {
            c
            for v in (state.primary_version, state.candidate_version)
            for c in store.manifest(state.model, v).outputs.class_names
        }
    except StoreError as exc:
        log.warning("reading every column for the rollout of %s: %s", state.model, exc)
        return None
    return [*COMPARED_COLUMNS, *sorted(proba_column(c) for c in classes)]


def rollout_report(
    settings: Settings, state: RolloutState, now: datetime | None = None
) -> dict[str, Any]:
    """``comparison``, ``gate_results`` and ``decision``; with ``comparison_error`` instead when
    the log cannot be read (the state is still worth showing)."""
    now = now or datetime.now(UTC)
    try:
        frame = read_rollout_window(settings, state)
    except Exception as exc:  # any log store failure: show the state, say why numbers are missing
        log.exception("cannot read the I/O log for the rollout of %s", state.model)
        return {"comparison": None, "comparison_error": f"cannot read the I/O log: {exc}"}
    task: Task = "regression" if state.gates.regression else "classification"
    comparison = compare(
        frame, state.primary_version, state.candidate_version,
        task=task, tolerance=state.gates.agreement_tolerance,
    )  # fmt: skip
    results = evaluate_gates(comparison, state.gates, state.started_at, now)
    return {
        "comparison": comparison.model_dump(mode="json"),
        "gate_results": [r.model_dump(mode="json") for r in results],
        "decision": decide(results).value,
    }
