"""Which model versions this worker serves, following the store's alias without a restart.

A switch loads and smoke-tests the new version first, then replaces one dict entry: requests that
already hold the old ``LoadedModel`` finish on it, new ones get the new one. A version that fails
to load is never switched to; the old one keeps serving and the failure shows in readiness.

Loading (sha256 of the file, an onnxruntime session, a smoke prediction) takes tens to hundreds
of milliseconds for a large forest, so it never runs on the event loop: ``aget`` hands it to the
loader thread. Each version loads at most once at a time (single flight: every caller waits on
the same future), and at most ``max_loaded`` versions of a model stay loaded; the least recently
used goes first, never a pinned one (the alias's version, and any ``pin``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import onnxruntime as ort

from model_store.rollout import Rollouts
from model_store.store import ModelStore
from service.core.loaded_model import LoadedModel
from service.core.routing import Route
from service.errors import (
    ModelNotFoundError,
    ModelNotReadyError,
    StoreError,
    VersionInUseError,
    VersionLoadError,
    VersionNotFoundError,
)

log = logging.getLogger("vigil.registry")
# One load at a time: loads are CPU-bound, and every extra loader thread is one more
# contender for the GIL the event loop needs between requests.
LOADER_THREADS = 1


@dataclass
class ModelState:
    default: LoadedModel | None = None
    loaded: dict[int, LoadedModel] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    last_used: dict[int, int] = field(default_factory=dict)  # version → tick of its last use


Listener = Callable[[LoadedModel | None, LoadedModel], None]
FailureListener = Callable[[str, int, str], None]
VersionListener = Callable[[str, int], None]


class ModelRegistry:
    def __init__(
        self,
        store: ModelStore,
        opts: ort.SessionOptions,
        alias: str = "production",
        *,
        max_loaded: int = 4,
    ) -> None:
        self.store = store
        self.alias = alias
        self.max_loaded = max_loaded
        self._opts = opts
        self._models: dict[str, ModelState] = {}
        self._listeners: list[Listener] = []
        self._failure_listeners: list[FailureListener] = []
        self._load_listeners: list[VersionListener] = []
        self._unload_listeners: list[VersionListener] = []
        # The alias follower and admin calls switch from different threads: one at a time.
        self._switching = threading.RLock()
        # Guards in-flight loads, pins and what is loaded. The hot path only reads dicts
        # (atomic under the GIL) and never takes it.
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], Future[LoadedModel]] = {}
        self._pins: dict[str, set[int]] = {}
        self._rollouts = Rollouts(store)
        # model → the rollout the data plane follows; replaced whole, read with one lookup.
        self._routes: dict[str, Route] = {}
        # (model, candidate, revision) whose candidate could not be read: said once, then retried
        # quietly every poll (the version may come back), not logged as an error every second
        self._unroutable: set[tuple[str, int, int]] = set()
        self._route_listeners: list[Callable[[str, Route | None], None]] = []
        self._tick = itertools.count()
        self._loader = ThreadPoolExecutor(LOADER_THREADS, thread_name_prefix="vigil-load")

    def on_switch(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_failure(self, listener: FailureListener) -> None:
        self._failure_listeners.append(listener)

    def on_load(self, listener: VersionListener) -> None:
        self._load_listeners.append(listener)

    def on_unload(self, listener: VersionListener) -> None:
        self._unload_listeners.append(listener)

    def on_route(self, listener: Callable[[str, Route | None], None]) -> None:
        """Called (in the follower thread) when a model's rollout route changes or ends."""
        self._route_listeners.append(listener)

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    # -- hot path ----------------------------------------------------------------------------
    def route(self, model: str) -> Route | None:
        """The rollout this worker follows for ``model``; None when none runs (or its candidate
        cannot serve here)."""
        return self._routes.get(model)

    def peek(self, model: str, version: int | None = None) -> LoadedModel | None:
        """The default or a loaded version, None if ``version`` is not loaded. Never loads."""
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
            state.last_used[version] = next(self._tick)
        return found

    async def aget(self, model: str, version: int | None = None) -> LoadedModel:
        """``get`` for the event loop: a load runs on a loader thread while the loop serves."""
        found = self.peek(model, version)
        if found is not None:
            return found
        assert version is not None  # peek answers or raises for the default
        self.store.version_dir(model, version)  # an unknown version is a 404 now, loads nothing
        flight, owner = self._flight(model, version)
        if owner:
            try:
                self._loader.submit(self._fly, model, version, flight)
            except RuntimeError as exc:  # the loader is closed: the app is shutting down
                self._land(model, version, flight, exc)
        return await asyncio.wrap_future(flight)

    def get(self, model: str, version: int | None = None) -> LoadedModel:
        """A version, loaded in the calling thread if needed: not for the event loop."""
        found = self.peek(model, version)
        if found is not None:
            return found
        assert version is not None
        flight, owner = self._flight(model, version)
        if owner:
            self._fly(model, version, flight)
        return flight.result()

    # -- loading and switching ---------------------------------------------------------------
    def _flight(self, model: str, version: int) -> tuple[Future[LoadedModel], bool]:
        """The one load of ``version`` in progress, and whether the caller must run it."""
        with self._lock:
            running = self._inflight.get((model, version))
            if running is not None:
                return running, False
            landed = self._models.get(model, ModelState()).loaded.get(version)
            flight: Future[LoadedModel] = Future()
            # Running: a waiter that is cancelled (its request timed out) cannot cancel the
            # load the other waiters share.
            flight.set_running_or_notify_cancel()
            if landed is not None:  # it was admitted between the caller's look and this lock
                flight.set_result(landed)
                return flight, False
            self._inflight[(model, version)] = flight
            return flight, True

    def _fly(self, model: str, version: int, flight: Future[LoadedModel]) -> None:
        try:
            loaded = self._load(model, version)
            self._admit(model, loaded)
        except BaseException as exc:  # handed to every waiter, which re-raise it
            self._land(model, version, flight, exc)
        else:
            self._land(model, version, flight, loaded)

    def _land(
        self, model: str, version: int, flight: Future[LoadedModel],
        outcome: LoadedModel | BaseException,
    ) -> None:  # fmt: skip
        """End the flight: later callers find the version loaded (or try again after a failure)."""
        with self._lock:
            del self._inflight[(model, version)]
        if isinstance(outcome, BaseException):
            flight.set_exception(outcome)
        else:
            flight.set_result(outcome)

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
        for loaded_listener in self._load_listeners:
            loaded_listener(model, version)
        return loaded

    def _admit(self, model: str, loaded: LoadedModel, *, default: bool = False) -> None:
        """Make ``loaded`` servable (the default if asked), then unload beyond the bound."""
        with self._lock:
            state = self._models.setdefault(model, ModelState())
            state.failures.pop(loaded.version, None)
            if default:
                state.default = loaded
            state.loaded[loaded.version] = loaded
            state.last_used[loaded.version] = next(self._tick)
            evicted = self._evict(model, state)
        for version in evicted:
            log.info(
                "unloaded %s v%s: least recently used beyond %d", model, version, self.max_loaded
            )
            for unloaded in self._unload_listeners:
                unloaded(model, version)

    def _evict(self, model: str, state: ModelState) -> list[int]:
        """Unload least recently used versions beyond ``max_loaded``; pinned ones stay."""
        excess = len(state.loaded) - self.max_loaded
        if excess <= 0:
            return []
        pinned = self._pinned(model, state)
        spare = sorted(
            (v for v in list(state.loaded) if v not in pinned),
            key=lambda v: state.last_used.get(v, -1),
        )[:excess]
        for version in spare:
            del state.loaded[version]
            state.last_used.pop(version, None)
        return spare

    # -- pins: versions that must stay loaded (the alias's; a rollout candidate's) -------------
    def _pinned(self, model: str, state: ModelState) -> set[int]:
        pinned = set(self._pins.get(model, ()))
        if state.default is not None:
            pinned.add(state.default.version)
        return pinned

    def pinned(self, model: str) -> set[int]:
        with self._lock:
            return self._pinned(model, self._models.get(model, ModelState()))

    def pin(self, model: str, version: int) -> None:
        """Keep ``version`` loaded once loaded (it still counts towards the bound)."""
        with self._lock:
            self._pins.setdefault(model, set()).add(version)

    def unpin(self, model: str, version: int) -> None:
        with self._lock:
            self._pins.get(model, set()).discard(version)
            state = self._models.get(model)
            evicted = self._evict(model, state) if state else []
        for v in evicted:
            for unloaded in self._unload_listeners:
                unloaded(model, v)

    def unload(self, model: str, version: int) -> None:
        with self._lock:
            state = self._models.get(model)
            if state is None or version not in state.loaded:
                raise VersionNotFoundError(f"{model} v{version} is not loaded")
            if state.default is not None and state.default.version == version:
                raise VersionInUseError(
                    f"{model} v{version} is the served default; promote another first"
                )
            if version in self._pins.get(model, ()):
                raise VersionInUseError(f"{model} v{version} is pinned (a rollout uses it)")
            del state.loaded[version]
            state.last_used.pop(version, None)
        for unloaded in self._unload_listeners:
            unloaded(model, version)

    def switch(self, model: str, version: int) -> LoadedModel:
        """Make ``version`` the default; raises (and keeps the old one) if it cannot serve."""
        with self._switching:
            return self._switch(model, version)

    def _switch(self, model: str, version: int) -> LoadedModel:
        loaded = self.get(model, version)
        old = self._models[model].default
        # Admitted again as the default: it may have been unloaded since ``get`` returned.
        self._admit(model, loaded, default=True)
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
            except StoreError as exc:
                log.error("not switching %s to v%s: %s", model, target, exc)
        for model in self.store.models():
            self._follow_rollout(model)

    def _follow_rollout(self, model: str) -> None:
        """Load and pin the running rollout's candidate, then route to it; unroute and unpin
        when the rollout ends. A candidate that cannot load is never routed to."""
        try:
            rollout = self._rollouts.current(model)
        except StoreError as exc:
            log.error("cannot read the rollout of %s: %s", model, exc)
            rollout = None
        old = self._routes.get(model)
        state = self._models.get(model)
        primary = state.default if state else None
        new: Route | None = None
        if rollout is not None and primary is not None:
            cand = rollout.candidate_version
            if (
                old is not None
                and old.candidate.version == cand
                and old.revision == rollout.revision
            ):
                new = (
                    old if old.primary is primary else Route.build(rollout, primary, old.candidate)
                )
            elif cand == primary.version:
                new = None  # promoted: the alias already serves it
            elif state is not None and cand in state.failures:
                new = None  # already refused; retried on reload (retry_failed)
            else:
                self.pin(model, cand)
                try:
                    candidate = self.get(model, cand)
                except StoreError as exc:
                    key = (model, cand, rollout.revision)
                    level = logging.DEBUG if key in self._unroutable else logging.ERROR
                    self._unroutable.add(key)
                    log.log(level, "not routing %s to candidate v%s: %s", model, cand, exc)
                    self.unpin(model, cand)
                    candidate = None
                if candidate is not None:
                    new = Route.build(rollout, primary, candidate)
        if new is old:
            return
        if new is None:
            self._routes.pop(model, None)
        else:
            self._routes[model] = new
        if old is not None and (new is None or new.candidate.version != old.candidate.version):
            self.unpin(model, old.candidate.version)
        if new is None and rollout is not None:
            self.unpin(model, rollout.candidate_version)
        log.info(
            "%s: %s", model,
            f"rollout route {new.mode} to v{new.candidate.version} (revision {new.revision})"
            if new else "no rollout route",
        )  # fmt: skip
        for listener in self._route_listeners:
            listener(model, new)

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
