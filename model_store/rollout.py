"""Rollout state: a candidate version served beside the primary, in the model store.

``<store>/<model>/rollout.json`` holds the one running rollout of a model (replaced atomically;
absent when none runs). Every change goes through :class:`Rollouts` under the model lock and is
recorded in the model's history. Each change bumps ``revision``: an actor that decided on the
state it read (the automatic loop) passes ``expected_revision`` and is refused with a conflict if
someone else changed the rollout in between, so racing actors leave exactly one consistent state.

Serving the candidate (shadow copies, canary share) is not decided here: replicas read
:meth:`Rollouts.current` and route accordingly; promote moves the alias they already follow.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_store.errors import (
    IntegrityError,
    RolloutConflictError,
    RolloutInvalidError,
    RolloutNotFoundError,
)
from model_store.history import WHO_CLI, Action, HistoryEntry, now_utc
from model_store.store import ALIASES_FILE, ROLLOUT_FILE, ModelStore

ERROR_METRICS = ("mae", "rmse")  # a regressor's: lower is better


class Mode(StrEnum):
    SHADOW = "shadow"  # the candidate answers a copy of the traffic; clients see the primary
    CANARY = "canary"  # the candidate answers `percent` % of the requests itself


class Gates(BaseModel):
    """Thresholds the comparison of candidate and primary must meet (service/offline/gates.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_requests: int = Field(
        200, ge=1, description="Candidate requests needed before any comparison gate can pass."
    )
    min_duration_s: float = Field(
        600.0, ge=0, description="Seconds the rollout must have run before it can pass."
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Safety: largest share of candidate requests that fail."
    )
    max_p99_ratio: float = Field(
        1.5, gt=0, description="Safety: largest candidate/primary ratio of p99 latency."
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1, description="Smallest share of shadow rows where both predict alike."
    )
    agreement_tolerance: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Regressors: a shadow row agrees when the two predictions differ by at most "
        "this fraction of the larger of them.",
    )
    min_labels: int = Field(
        100, ge=1, description="Labelled rows needed on each side to judge the metric."
    )
    metric: str = Field(
        "accuracy",
        pattern="^(accuracy|f1_macro|mae|rmse)$",
        description="Judged metric: accuracy or f1_macro for classifiers, mae or rmse for "
        "regressors (a regressor's rollout judges mae unless told).",
    )
    metric_margin: float | None = Field(
        0.02,
        ge=0,
        le=1,
        description="Non-inferiority margin. Classifiers: the 95 % CI of candidate - primary "
        "must lie above -margin. Regressors (an error: lower is better): it must lie below "
        "margin x the primary's error. None skips the gate (a model whose labels never arrive).",
    )

    @property
    def regression(self) -> bool:
        """Whether these gates judge a regressor (its rollout starts with an error metric)."""
        return self.metric in ERROR_METRICS


class RolloutStep(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    at: datetime
    who: str
    mode: Mode
    percent: float


class RolloutState(BaseModel):
    """The running rollout of one model, as stored in rollout.json."""

    # ignore: a replica running older code can still read a state written by newer code
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    alias: str = "production"
    primary_version: int = Field(description="The alias's version when the rollout started.")
    candidate_version: int
    mode: Mode
    percent: float = Field(
        0.0, ge=0, le=100, description="Canary: share of requests the candidate answers."
    )
    sample: float = Field(
        1.0, gt=0, le=1, description="Shadow: share of requests copied to the candidate."
    )
    auto: bool = Field(False, description="The automatic loop may step, promote and abort it.")
    gates: Gates = Field(default_factory=Gates)
    started_at: datetime
    updated_at: datetime
    started_by: str
    revision: int = Field(1, ge=1, description="Bumped by every change; see expected_revision.")
    steps: list[RolloutStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shadow_serves_nobody(self) -> Self:
        if self.mode is Mode.SHADOW and self.percent != 0:
            raise ValueError("percent: a shadow rollout serves no client from the candidate; use 0")
        if self.candidate_version == self.primary_version:
            raise ValueError(f"version: v{self.candidate_version} is already served")
        return self


def _judged_gates(gates: Gates | dict[str, Any] | None, *, regression: bool) -> dict[str, Any]:
    """The gates as given, with the task's metric: a regressor's rollout judges ``mae`` unless
    told otherwise; a metric of the other task is refused (it would mean nothing here)."""
    given = gates.model_dump(exclude_unset=True) if isinstance(gates, Gates) else dict(gates or {})
    metric = given.get("metric")
    if metric is None:
        if regression:
            given["metric"] = ERROR_METRICS[0]
    elif isinstance(metric, str) and (metric in ERROR_METRICS) != regression:
        kind, wanted = (
            ("regressor", "mae or rmse") if regression else ("classifier", "accuracy or f1_macro")
        )
        raise RolloutInvalidError(f"gates.metric: {metric} does not judge a {kind}; use {wanted}")
    return given


def _invalid(exc: ValidationError) -> RolloutInvalidError:
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])
    return RolloutInvalidError(f"{where}: {message}" if where else message)


class Rollouts:
    """Start, step, promote and abort rollouts of the models of one store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def current(self, model: str) -> RolloutState | None:
        path = self.store.root / model / ROLLOUT_FILE
        try:
            return RolloutState.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as exc:  # written atomically, so only a hand edit gets here
            raise IntegrityError(f"{path} is unreadable: {exc.errors()[0]['msg']}") from None

    def require(self, model: str) -> RolloutState:
        """The running rollout, or RolloutNotFoundError (ModelNotFoundError for no model)."""
        self.store.resolve(model)
        state = self.current(model)
        if state is None:
            raise RolloutNotFoundError(f"no rollout is running for {model}")
        return state

    def start(
        self,
        model: str,
        candidate: int,
        mode: Mode,
        *,
        percent: float | None = None,
        sample: float = 1.0,
        auto: bool = False,
        gates: Gates | dict[str, Any] | None = None,
        alias: str = "production",
        who: str = WHO_CLI,
        reason: str | None = None,
    ) -> RolloutState:
        self.store.version_dir(model, candidate)  # unknown model or version → not found
        with self.store.lock(model):
            if self.current(model) is not None:
                raise RolloutConflictError(
                    f"a rollout of {model} is already running: promote or abort it first"
                )
            primary = self.store.resolve(model, alias)
            tasks = {self.store.manifest(model, v).task for v in (primary, candidate)}
            if len(tasks) > 1:
                raise RolloutInvalidError(
                    f"v{candidate} and the served v{primary} of {model} differ in task "
                    f"({' vs '.join(sorted(tasks))}): a rollout compares versions of one task"
                )
            judged = _judged_gates(gates, regression=tasks == {"regression"})
            now = now_utc()
            pct = percent if percent is not None else _default_percent(mode)
            fields: dict[str, Any] = {
                "model": model, "alias": alias, "primary_version": primary,
                "candidate_version": candidate, "mode": mode, "percent": pct, "sample": sample,
                "auto": auto, "gates": judged, "started_at": now,
                "updated_at": now, "started_by": who,
                "steps": [RolloutStep(at=now, who=who, mode=mode, percent=pct)],
            }  # fmt: skip
            try:
                state = RolloutState.model_validate(fields)
            except ValidationError as exc:
                raise _invalid(exc) from None
            self._commit(state, Action.ROLLOUT_START, who, reason, None)
        return state

    def step(
        self,
        model: str,
        percent: float,
        *,
        expected_revision: int | None = None,
        who: str = WHO_CLI,
        reason: str | None = None,
        gate_results: list[dict[str, Any]] | None = None,
    ) -> RolloutState:
        """Set the canary share; a shadow rollout stepped to a share above 0 becomes a canary."""
        with self.store.lock(model):
            state = self._acting_on(model, expected_revision)
            now = now_utc()
            mode = Mode.CANARY if percent > 0 else state.mode
            try:
                new = RolloutState.model_validate(
                    {
                        **state.model_dump(),
                        "mode": mode,
                        "percent": percent,
                        "updated_at": now,
                        "revision": state.revision + 1,
                        "steps": [
                            *state.steps,
                            RolloutStep(at=now, who=who, mode=mode, percent=percent),
                        ],
                    }
                )
            except ValidationError as exc:
                raise _invalid(exc) from None
            self._commit(new, Action.ROLLOUT_STEP, who, reason, gate_results)
        return new

    def promote(
        self,
        model: str,
        *,
        expected_revision: int | None = None,
        who: str = WHO_CLI,
        reason: str | None = None,
        gate_results: list[dict[str, Any]] | None = None,
    ) -> RolloutState:
        """Move the alias to the candidate and end the rollout; returns the ended state."""
        with self.store.lock(model):
            state = self._acting_on(model, expected_revision)
            files = {
                ALIASES_FILE: self.store.alias_moved(model, state.candidate_version, state.alias),
                ROLLOUT_FILE: None,
            }
            self.store.commit(
                model, files, _entry(state, Action.ROLLOUT_PROMOTE, who, reason, gate_results)
            )
        return state

    def abort(
        self,
        model: str,
        *,
        expected_revision: int | None = None,
        who: str = WHO_CLI,
        reason: str | None = None,
        gate_results: list[dict[str, Any]] | None = None,
    ) -> RolloutState:
        """End the rollout; the primary keeps serving. Returns the ended state."""
        with self.store.lock(model):
            state = self._acting_on(model, expected_revision)
            self.store.commit(
                model,
                {ROLLOUT_FILE: None},
                _entry(state, Action.ROLLOUT_ABORT, who, reason, gate_results),
            )
        return state

    def _acting_on(self, model: str, expected_revision: int | None) -> RolloutState:
        state = self.require(model)
        if expected_revision is not None and state.revision != expected_revision:
            raise RolloutConflictError(
                f"the rollout of {model} changed (revision {state.revision}, expected "
                f"{expected_revision}); read it again before acting"
            )
        return state

    def _commit(
        self,
        state: RolloutState,
        action: Action,
        who: str,
        reason: str | None,
        gate_results: list[dict[str, Any]] | None,
    ) -> None:
        data = state.model_dump_json(indent=2).encode()
        entry = _entry(state, action, who, reason, gate_results)
        self.store.commit(state.model, {ROLLOUT_FILE: data}, entry)


def _default_percent(mode: Mode) -> float:
    return 10.0 if mode is Mode.CANARY else 0.0


def _entry(
    state: RolloutState,
    action: Action,
    who: str,
    reason: str | None,
    gate_results: list[dict[str, Any]] | None,
) -> HistoryEntry:
    return HistoryEntry(
        at=now_utc(),
        who=who,
        action=action,
        alias=state.alias,
        from_version=state.primary_version,
        to_version=state.candidate_version,
        reason=reason,
        details={"mode": state.mode.value, "percent": state.percent, "sample": state.sample,
                 "revision": state.revision},
        gates=gate_results,
    )  # fmt: skip
