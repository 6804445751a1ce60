"""Which model versions this worker serves, following the store's alias without a restart.

A switch loads and smoke-tests the new version first, then replaces one dict entry: requests that
already hold the old ``LoadedModel`` finish on it, new ones get the new one. A version that fails
to load is never switched to; the old one keeps serving and the failure shows in readiness.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import onnxruntime as ort

from model_store.errors import ModelNotFoundError, StoreError, VersionNotFoundError
from model_store.store import ModelStore
from service.core.loaded_model import LoadedModel

log = logging.getLogger("vigil.registry")


@dataclass
class ModelState:
    default: LoadedModel | None = None
    loaded: dict[int, LoadedModel] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


Listener = Callable[[LoadedModel | None, LoadedModel], None]
FailureListener = Callable[[str, int, str], None]


class ModelRegistry:
    def __init__(
        self, store: ModelStore, opts: ort.SessionOptions, alias: str = "production"
    ) -> None:
        self.store = store
        self.alias = alias
        self._opts = opts
        self._models: dict[str, ModelState] = {}
        self._listeners: list[Listener] = []
        self._failure_listeners: list[FailureListener] = []
        # The alias follower and admin calls switch from different threads: one at a time.
        self._switching = threading.RLock()

    def on_switch(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_failure(self, listener: FailureListener) -> None:
        self._failure_listeners.append(listener)

    # -- hot path ----------------------------------------------------------------------------
    def get(self, model: str, version: int | None = None) -> LoadedModel:
        state = self._models.get(model)
        if state is None:
            if not self.store.versions(model):
                raise ModelNotFoundError(f"model {model!r} is not served here")
            state = self._models.setdefault(model, ModelState())
        if version is None:
            if state.default is None:
                reason = "; ".join(state.failures.values()) or "not loaded yet"
                raise ModelNotReadyError(f"model {model!r} has no loadable version: {reason}")
            return state.default
        found = state.loaded.get(version)
        if found is not None:
            return found
        return self._load(model, version)

    # -- loading and switching ---------------------------------------------------------------
    def _load(self, model: str, version: int) -> LoadedModel:
        try:
            loaded = LoadedModel.load(self.store, model, version, self._opts)
        except (ModelNotFoundError, VersionNotFoundError):
            raise  # no state for names that are not in the store: they must not spoil readiness
        except Exception as exc:
            state = self._models.setdefault(model, ModelState())
            reason = f"{model} v{version}: {exc}"
            log.error("refusing to load %s", reason, exc_info=not isinstance(exc, StoreError))
            state.failures[version] = reason
            for failed in self._failure_listeners:
                failed(model, version, reason)
            raise VersionLoadError(reason) from exc
        state = self._models.setdefault(model, ModelState())
        state.failures.pop(version, None)
        state.loaded[version] = loaded
        return loaded

    def unload(self, model: str, version: int) -> None:
        state = self._models.get(model)
        if state is None or version not in state.loaded:
            raise VersionNotFoundError(f"{model} v{version} is not loaded")
        if state.default is not None and state.default.version == version:
            raise VersionInUseError(
                f"{model} v{version} is the served default; promote another first"
            )
        del state.loaded[version]

    def switch(self, model: str, version: int) -> LoadedModel:
        """Make ``version`` the default; raises (and keeps the old one) if it cannot serve."""
        with self._switching:
            return self._switch(model, version)

    def _switch(self, model: str, version: int) -> LoadedModel:
        loaded = self._models.get(model, ModelState()).loaded.get(version) or self._load(
            model, version
        )
        state = self._models[model]
        old, state.default = state.default, loaded
        if old is None or old.version != version:
            log.info("%s now serves version %s (was %s)", model, version, old and old.version)
            for listener in self._listeners:
                listener(old, loaded)
        return loaded

    def refresh(self) -> None:
        """Follow the alias of every model in the store (called at start and periodically)."""
        with self._switching:
            self._refresh()

    def _refresh(self) -> None:
        for model in self.store.models():
            try:
                target = self.store.resolve(model, self.alias)
            except StoreError as exc:
                log.error("cannot resolve %s: %s", model, exc)
                continue
            state = self._models.get(model)
            if state and state.default and state.default.version == target:
                continue
            if state and target in state.failures:
                continue  # already refused; retried when the alias moves again or on reload
            try:
                self._switch(model, target)
            except (VersionLoadError, StoreError) as exc:
                log.error("not switching %s to v%s: %s", model, target, exc)

    def retry_failed(self) -> None:
        for state in self._models.values():
            state.failures.clear()
        self.refresh()

    async def follow(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:
                log.exception("alias refresh failed")

    # -- status ------------------------------------------------------------------------------
    def state(self, model: str) -> ModelState | None:
        """The model's state if the store knew the name when asked (no copy, unlike models)."""
        return self._models.get(model)

    def models(self) -> dict[str, ModelState]:
        return dict(self._models)

    def readiness(self) -> tuple[bool, dict[str, object]]:
        report: dict[str, object] = {}
        ready = bool(self._models)
        for name, state in sorted(self._models.items()):
            serving = state.default.version if state.default else None
            ready = ready and serving is not None
            report[name] = {
                "serving_version": serving,
                "loaded_versions": sorted(state.loaded),
                "failures": {str(v): why for v, why in sorted(state.failures.items())},
            }
        return ready, report


class ModelNotReadyError(StoreError):
    pass


class VersionLoadError(StoreError):
    pass


class VersionInUseError(StoreError):
    pass
