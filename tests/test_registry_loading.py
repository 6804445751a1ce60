"""Loading versions on demand: off the event loop, once per version, within a bound, LRU out."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL
from model_store.store import ModelStore
from service.app import create_app
from service.core.loaded_model import LoadedModel, session_options
from service.core.registry import ModelRegistry
from service.settings import Settings
from tests.servers import VigilServer

# How long a held load waits for the test to release it. Only reached when the test fails
# (the event loop was blocked by the load, so the test could not release it in time).
HOLD_S = 5.0


@dataclass
class LoadGate:
    """Counts ``LoadedModel.load`` calls by version; holds loads of ``hold`` until released."""

    hold: set[int] = field(default_factory=set)
    calls: Counter[int] = field(default_factory=Counter)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    holding: bool = False


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> LoadGate:
    gate = LoadGate()
    real = LoadedModel.load.__func__  # type: ignore[attr-defined]

    def load(
        cls: type[LoadedModel], store: ModelStore, model: str, version: int, opts: Any
    ) -> LoadedModel:
        gate.calls[version] += 1
        if version in gate.hold:
            gate.holding = True
            gate.entered.set()
            gate.release.wait(HOLD_S)
            gate.holding = False
        loaded: LoadedModel = real(cls, store, model, version, opts)
        return loaded

    monkeypatch.setattr(LoadedModel, "load", classmethod(load))
    return gate


def add_versions(store: ModelStore, count: int) -> list[int]:
    """``count`` more versions of the demo model (copies of v2 under new numbers)."""
    manifest = store.manifest(DEMO_MODEL, 2)
    data = store.model_path(DEMO_MODEL, 2).read_bytes()
    reference = store.reference_path(DEMO_MODEL, 2)
    return [
        store.register(
            DEMO_MODEL,
            data,
            lambda v, sha: manifest.model_copy(update={"version": v, "sha256": sha}),
            lambda dest: shutil.copyfile(reference, dest),
        ).version
        for _ in range(count)
    ]


@pytest.fixture
def registry(store: ModelStore) -> Iterator[Callable[..., ModelRegistry]]:
    made: list[ModelRegistry] = []

    def factory(max_loaded: int = 4) -> ModelRegistry:
        reg = ModelRegistry(store, session_options(1, 1), max_loaded=max_loaded)
        reg.refresh()  # v1, the alias's version, becomes the default
        made.append(reg)
        return reg

    yield factory
    for reg in made:
        reg.close()


def test_concurrent_first_requests_load_a_version_once(
    registry: Callable[..., ModelRegistry], gate: LoadGate
) -> None:
    reg = registry()
    gate.hold.add(2)

    async def eight_at_once() -> list[LoadedModel]:
        tasks = [asyncio.create_task(reg.aget(DEMO_MODEL, 2)) for _ in range(8)]
        # While this waits, all eight tasks run up to their wait on the (held) load.
        assert await asyncio.to_thread(gate.entered.wait, HOLD_S)
        gate.release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(eight_at_once())
    assert gate.calls[2] == 1
    assert all(r is results[0] for r in results) and results[0].version == 2
    assert reg.get(DEMO_MODEL, 2) is results[0] and gate.calls[2] == 1


def test_a_cancelled_waiter_does_not_cancel_the_shared_load(
    registry: Callable[..., ModelRegistry], gate: LoadGate
) -> None:
    """A request that times out while waiting must not fail the others waiting on the load."""
    reg = registry()
    gate.hold.add(2)

    async def one_gives_up() -> LoadedModel:
        impatient = asyncio.create_task(reg.aget(DEMO_MODEL, 2))
        patient = asyncio.create_task(reg.aget(DEMO_MODEL, 2))
        assert await asyncio.to_thread(gate.entered.wait, HOLD_S)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        gate.release.set()
        return await patient

    assert asyncio.run(one_gives_up()).version == 2
    assert gate.calls[2] == 1


def test_concurrent_first_requests_to_a_live_server_load_once(
    vigil_server: Callable[..., VigilServer], rows: list[dict[str, float]]
) -> None:
    server = vigil_server()
    url = f"{server.url}/v1/models/{DEMO_MODEL}/versions/2/predict"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, json={"instances": rows[:1]}), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    metrics = httpx.get(server.url + "/metrics").text
    assert f'vigil_model_loads_total{{model="{DEMO_MODEL}",version="2"}} 1.0' in metrics


def test_loop_answers_while_a_version_loads(
    settings: Settings, gate: LoadGate, rows: list[dict[str, float]]
) -> None:
    gate.hold.add(2)
    with TestClient(create_app(settings)) as client:
        first: list[httpx.Response] = []
        url = f"/v1/models/{DEMO_MODEL}/versions/2/predict"
        waiter = threading.Thread(
            target=lambda: first.append(client.post(url, json={"instances": rows[:1]}))
        )
        waiter.start()
        assert gate.entered.wait(HOLD_S)
        live = client.get("/v2/health/live")
        answered_while_loading = gate.holding
        ready = client.get(f"/v2/models/{DEMO_MODEL}/versions/1/ready")
        gate.release.set()
        waiter.join()
    assert live.status_code == 200 and ready.status_code == 200
    assert answered_while_loading, "the event loop waited for the load"
    assert first[0].status_code == 200 and first[0].json()["version"] == 2


def test_least_recently_used_unloaded_and_pinned_versions_kept(
    store: ModelStore, registry: Callable[..., ModelRegistry], gate: LoadGate
) -> None:
    v3, v4, v5 = add_versions(store, 3)
    reg = registry(max_loaded=3)
    unloaded: list[int] = []
    reg.on_unload(lambda _model, version: unloaded.append(version))

    def loaded() -> list[int]:
        return sorted(reg.models()[DEMO_MODEL].loaded)

    reg.get(DEMO_MODEL, 2)
    reg.get(DEMO_MODEL, v3)
    assert loaded() == [1, 2, v3]
    reg.peek(DEMO_MODEL, 2)  # 2 is now more recent than 3; v1 is the oldest but the alias's
    reg.get(DEMO_MODEL, v4)
    assert loaded() == [1, 2, v4] and unloaded == [v3]
    reg.pin(DEMO_MODEL, 2)  # as a rollout candidate would be
    reg.get(DEMO_MODEL, v5)
    assert loaded() == [1, 2, v5] and unloaded == [v3, v4]
    # the alias moves to v5: v1 is no longer pinned and is the least recently used
    reg.switch(DEMO_MODEL, v5)
    reg.get(DEMO_MODEL, v3)
    assert loaded() == [2, v3, v5] and unloaded == [v3, v4, 1]
    assert reg.pinned(DEMO_MODEL) == {2, v5}
    assert gate.calls == Counter({1: 1, 2: 1, v3: 2, v4: 1, v5: 1})


def test_bound_over_http_unloads_and_counts(
    settings: Settings, store: ModelStore, rows: list[dict[str, float]]
) -> None:
    (v3,) = add_versions(store, 1)
    app = create_app(settings.model_copy(update={"max_loaded_versions": 2}))
    with TestClient(app) as client:
        for version in (2, v3):
            r = client.post(
                f"/v1/models/{DEMO_MODEL}/versions/{version}/predict",
                json={"instances": rows[:1]},
            )
            assert r.json()["version"] == version
        report = client.get("/v1/models").json()["models"][DEMO_MODEL]
        metrics = client.get("/metrics").text
    assert report["serving_version"] == 1 and report["loaded_versions"] == [1, v3]
    assert f'vigil_model_unloads_total{{model="{DEMO_MODEL}",version="2"}} 1.0' in metrics


def test_unknown_versions_are_404_and_load_nothing(
    client: TestClient, gate: LoadGate, rows: list[dict[str, float]]
) -> None:
    for path in (
        f"/v1/models/{DEMO_MODEL}/versions/99/predict",
        f"/v2/models/{DEMO_MODEL}/versions/99/infer",
    ):
        r = client.post(path, json={"instances": rows[:1]})
        assert r.status_code == 404 and "no version 99" in r.json()["error"]
    r = client.get(f"/v2/models/{DEMO_MODEL}/versions/99/ready")
    assert r.status_code == 404 and "no version 99" in r.json()["error"]
    assert gate.calls[99] == 0
    assert client.get("/v1/models").json()["models"][DEMO_MODEL]["loaded_versions"] == [1]


def test_max_loaded_versions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_loaded_versions"):
        Settings(max_loaded_versions=0)
