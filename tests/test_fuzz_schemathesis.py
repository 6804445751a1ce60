"""Property-based fuzzing of the live service from its own OpenAPI document (schemathesis 4).

Every operation in /openapi.json gets valid and invalid requests generated from the document.
Each response must not be a 5xx, must match the documented status codes, content types and
schemas, and every 4xx must be exactly ``{"error": "<non-empty message>"}``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.engine import Status, events, from_schema

from model_store.demo import DEMO_NAMES, train_demo_model
from model_store.store import ModelStore
from tests.servers import VigilServer, start_vigil

TOKEN = "fuzz-admin-token-0123456789"
# Per operation and phase; ~20 operations keep the run around 20 s on 2 cores.
MAX_EXAMPLES = 25
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "error_body_is_error_object",
]


@schemathesis.check
def error_body_is_error_object(ctx: CheckContext, response: Response, case: Case) -> None:
    """Vigil's contract: every 4xx body is exactly ``{"error": "<message>"}``."""
    if not 400 <= response.status_code < 500:
        return
    body = json.loads(response.content)
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert set(body) == {"error"}, f"{response.status_code} body has keys {sorted(body)}"
    assert isinstance(body["error"], str), f"{response.status_code} error is not a string"
    assert body["error"].strip(), f"{response.status_code} error message is empty"


@dataclass
class FuzzRun:
    checks_run: int
    failures: list[str]
    operations: set[str]


@pytest.fixture(scope="module", params=["breast-cancer", "kinds"])
def fuzz_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _demo_store_template: Path,
) -> Iterator[VigilServer]:
    """The demo store; or the other kinds (a regressor, three classes, string features)."""
    home = tmp_path_factory.mktemp("fuzz")
    if request.param == "kinds":
        for name in DEMO_NAMES[1:]:
            train_demo_model(ModelStore(home / "models"), name)
    else:
        shutil.copytree(_demo_store_template, home / "models")
    server = start_vigil(home, env={"VIGIL_ADMIN_TOKEN": TOKEN, "VIGIL_ALIAS_POLL_S": "0.5"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_run(fuzz_server: VigilServer) -> FuzzRun:
    """One schemathesis run (examples, coverage and fuzzing phases) over every operation.

    schemathesis' pytest plugin cannot be used: its lazy ``from_fixture`` loader breaks on
    pytest 9.2 (it writes ``Node._nodeid``), so the engine the CLI uses is driven directly.
    """
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    # The admin token goes with every request, so admin operations are fuzzed past the 401.
    schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"}, request_timeout=30)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        database="none",  # each run explores afresh; nothing is written into the checkout
    )
    schema.config.checks.update(included_check_names=CHECKS)
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    run = FuzzRun(0, [], set())
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            run.operations.add(event.recorder.label)
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    run.checks_run += 1
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        info = node.failure_info
                        run.failures.append(f"{node.name}: {info.failure}\n{info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            run.failures.append(f"schemathesis error: {event}")
    return run


def test_every_operation_honours_its_documented_contract(fuzz_run: FuzzRun) -> None:
    unique = sorted(set(fuzz_run.failures))
    assert not unique, f"{len(unique)} distinct failures:\n\n" + "\n\n".join(unique[:10])
    # The run really exercised the API: every documented operation, many checks.
    assert len(fuzz_run.operations) >= 19
    assert fuzz_run.checks_run > 1000


def test_fuzzing_left_the_server_ready(fuzz_run: FuzzRun, fuzz_server: VigilServer) -> None:
    """After thousands of hostile requests the server still serves and is ready."""
    ready = httpx.get(f"{fuzz_server.url}/v2/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    assert "unhandled error" not in fuzz_server.log()
