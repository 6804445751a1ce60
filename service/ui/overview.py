"""What the Models and Model pages show: versions, passports, aliases, rollouts, history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from model_store.errors import StoreError
from model_store.history import HistoryEntry
from model_store.manifest import Manifest
from model_store.rollout import Rollouts, RolloutState
from model_store.store import ModelStore
from service.settings import Settings
from service.ui.drift import latest_run
from service.ui.traffic import EMPTY, Summary, read_traffic

OVERVIEW_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ModelRow:
    name: str
    serving: int | None
    versions: list[int]
    rollout: RolloutState | None
    traffic: Summary
    drift: dict[str, Any] | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class VersionCard:
    version: int
    manifest: Manifest | None
    error: str | None
    aliases: list[str]


@dataclass(frozen=True, slots=True)
class ModelDetail:
    name: str
    serving: int | None
    versions: list[VersionCard]
    history: list[HistoryEntry]
    rollout: RolloutState | None
    can_roll_back: bool


def _serving(store: ModelStore, model: str, alias: str) -> int | None:
    try:
        return store.resolve(model, alias)
    except StoreError:
        return None


def models_overview(settings: Settings, now: datetime) -> list[ModelRow]:
    store = ModelStore(settings.model_store)
    rollouts = Rollouts(store)
    out = []
    for name in store.models():
        problem = None
        try:
            rollout = rollouts.current(name)
        except StoreError as exc:
            rollout, problem = None, str(exc)
        try:
            traffic = read_traffic(settings, name, now - OVERVIEW_WINDOW, now).total
        except Exception as exc:  # one model's unreadable log must not hide the others
            traffic, problem = EMPTY, f"I/O log unreadable: {exc}"
        out.append(
            ModelRow(
                name,
                _serving(store, name, settings.alias),
                store.versions(name),
                rollout,
                traffic,
                latest_run(settings, name),
                problem,
            )
        )
    return out


def model_detail(settings: Settings, model: str) -> ModelDetail:
    store = ModelStore(settings.model_store)
    serving = store.resolve(model, settings.alias)  # unknown model: ModelNotFoundError (404)
    by_version: dict[int, list[str]] = {}
    for alias, version in store.aliases(model).items():
        by_version.setdefault(version, []).append(alias)
    cards = []
    for v in reversed(store.versions(model)):
        try:
            manifest, error = store.manifest(model, v), None
        except StoreError as exc:
            manifest, error = None, str(exc)
        cards.append(VersionCard(v, manifest, error, sorted(by_version.get(v, []))))
    return ModelDetail(
        model, serving, cards, list(reversed(store.changes(model))),
        Rollouts(store).current(model), len(store.history(model, settings.alias)) >= 2,
    )  # fmt: skip
