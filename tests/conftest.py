"""Fixtures chained store → settings → app → client, plus a live server factory."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from model_store.demo import DEMO_MODEL, demo_data, train_demo
from model_store.manifest import Manifest
from model_store.store import ModelStore
from service.app import create_app
from service.core.registry import ModelRegistry
from service.settings import Settings
from tests.servers import VigilServer, start_vigil


@pytest.fixture(scope="session")
def _demo_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-store") / "models"
    store = ModelStore(root)
    train_demo(store)  # v1, production
    train_demo(store, c=0.01, promote=False)  # v2: a different, weaker model
    return root


@pytest.fixture
def home(tmp_path: Path, _demo_store_template: Path) -> Path:
    """A Vigil home with a copy of the demo store (v1 production, v2 candidate)."""
    shutil.copytree(_demo_store_template, tmp_path / "models")
    return tmp_path


@pytest.fixture
def store(home: Path) -> ModelStore:
    return ModelStore(home / "models")


@pytest.fixture
def reference(store: ModelStore) -> pd.DataFrame:
    """The demo model v1's reference sample (training and validation rows with predictions)."""
    return pd.read_parquet(store.reference_path(MODEL, 1))


@pytest.fixture
def manifest(store: ModelStore) -> Manifest:
    return store.manifest(MODEL, 1)


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(
        model_store=home / "models",
        data_dir=home / "data",
        alias_poll_s=0.2,
        compact_interval_s=0.2,
        spool_segment_seconds=0.5,
    )


@pytest.fixture
def read_only_store(settings: Settings) -> Iterator[Path]:
    """The model store bind-mounted read-only onto itself, as the Kubernetes manifests mount it."""
    root = str(settings.model_store)
    subprocess.run(["mount", "--bind", root, root], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", root], check=True)
        yield settings.model_store
    finally:
        subprocess.run(["umount", "-l", root], check=False)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def demo() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    return demo_data()


@pytest.fixture
def rows(demo: tuple[pd.DataFrame, np.ndarray, list[str]]) -> list[dict[str, float]]:
    records: list[dict[str, float]] = demo[0].to_dict("records")
    return records


@pytest.fixture
def vigil_server(home: Path) -> Iterator[Callable[..., VigilServer]]:
    started: list[VigilServer] = []

    def factory(**kwargs: object) -> VigilServer:
        server = start_vigil(home, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


MODEL = DEMO_MODEL


def registry_of(app: FastAPI) -> ModelRegistry:
    registry: ModelRegistry = app.state.runtime.registry
    return registry


def wait_route(
    app: FastAPI, revision: int | None, model: str = MODEL, timeout: float = 10.0
) -> None:
    """Until the app's worker follows rollout ``revision`` of ``model`` (None: no rollout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        route = registry_of(app).route(model)
        if (route.revision if route else None) == revision:
            return
        time.sleep(0.05)
    raise AssertionError(f"the worker did not follow revision {revision} of {model}")
