"""Realistic mixed traffic for Vigil: ``locust -f loadtests/locustfile.py --host http://…``.

User classes and their weights: single-row V1 predictions, V2 infer calls, batches of 10 and
1,000 rows, feedback posts and a small share of bad requests. A response counts as a failure only
when it is unexpected: a 4xx is a success for a bad request that expects exactly that status with
an ``{"error": "..."}`` body.

Environment: ``VIGIL_LOAD_WAIT_MIN``/``VIGIL_LOAD_WAIT_MAX`` (think time, seconds) and
``VIGIL_LOAD_TIMELINE`` (a JSON file to write per-10-s-window latencies to, used by the soak).
"""

# locust's own API is untyped.
# mypy: disable-error-code="no-untyped-call,untyped-decorator"
from __future__ import annotations

import os
import random
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtests import payloads
from loadtests.timeline import Timeline

_WAIT = between(
    float(os.environ.get("VIGIL_LOAD_WAIT_MIN", "0.05")),
    float(os.environ.get("VIGIL_LOAD_WAIT_MAX", "0.5")),
)
_JSON = {"Content-Type": "application/json"}
# Load the demo data now: loading it inside the first request would stall every greenlet.
payloads.bad_requests()
# Importing the demo data takes seconds while gevent's loop clock stands still; without this
# update, locust's --run-time timer would fire that many seconds early.
gevent.get_hub().loop.update_now()


def _error_body(response: ResponseContextManager) -> Any:
    try:
        body = orjson.loads(response.content or b"")
    except orjson.JSONDecodeError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def _expect_predictions(response: ResponseContextManager, rows: int) -> dict[str, Any] | None:
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
        return None
    body = orjson.loads(response.content or b"")
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        response.failure(f"expected {rows} predictions, got {str(body)[:200]}")
        return None
    response.success()
    return body  # type: ignore[no-any-return]


class _VigilUser(FastHttpUser):
    abstract = True
    wait_time = _WAIT

    def on_start(self) -> None:
        self.rng = random.Random()

    def predict(self, rows: int, name: str) -> tuple[list[int], dict[str, Any] | None]:
        indices = payloads.row_indices(rows, self.rng)
        with self.client.post(
            payloads.V1_PATH,
            data=payloads.v1_body(indices).decode(),
            headers=_JSON,
            name=name,
            catch_response=True,
        ) as response:
            return indices, _expect_predictions(response, rows)


class SingleRowV1(_VigilUser):
    weight = 40

    @task
    def predict_one(self) -> None:
        self.predict(1, "v1 predict 1 row")


class InferV2(_VigilUser):
    weight = 20

    @task
    def infer_one(self) -> None:
        body = payloads.v2_body(payloads.row_indices(1, self.rng))
        with self.client.post(
            payloads.V2_PATH,
            data=body.decode(),
            headers=_JSON,
            name="v2 infer 1 row",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")
                return
            outputs = orjson.loads(response.content or b"").get("outputs")
            if not isinstance(outputs, list) or {o.get("name") for o in outputs} != {
                "label",
                "probabilities",
            }:
                response.failure(f"unexpected outputs: {str(outputs)[:200]}")


class Batch10(_VigilUser):
    weight = 15

    @task
    def predict_ten(self) -> None:
        self.predict(10, "v1 predict 10 rows")


class Batch1000(_VigilUser):
    weight = 2

    @task
    def predict_thousand(self) -> None:
        self.predict(1000, "v1 predict 1000 rows")


class Feedback(_VigilUser):
    """Predicts, then posts ground truth for row 0 of the response, as a labelling job would."""

    weight = 10

    @task
    def predict_then_feedback(self) -> None:
        indices, body = self.predict(1, "v1 predict for feedback")
        if body is None:
            return
        classes = list(body["predictions"][0]["probabilities"])
        truth = payloads.demo().labels[indices[0]]
        label = truth if truth in classes else self.rng.choice(classes)
        with self.client.post(
            payloads.FEEDBACK_PATH,
            data=payloads.feedback_body(body["request_id"], 0, label).decode(),
            headers=_JSON,
            name="feedback",
            catch_response=True,
        ) as response:
            _judge_feedback(response)


def _judge_feedback(response: ResponseContextManager) -> None:
    if response.status_code == 200:
        response.success()
    else:
        response.failure(f"status {response.status_code}: {(response.text or '')[:200]}")


class BadRequests(_VigilUser):
    weight = 5

    @task
    def bad(self) -> None:
        case = self.rng.choice(payloads.bad_requests())
        with self.client.post(
            case.path,
            data=case.body.decode(),
            headers={"Content-Type": case.content_type},
            name=f"bad: {case.name}",
            catch_response=True,
        ) as response:
            error = _error_body(response)
            if response.status_code == case.status and isinstance(error, str) and error:
                response.success()
            else:
                response.failure(
                    f"expected {case.status} with an error body, got {response.status_code}: "
                    f"{(response.text or '')[:200]}"
                )


_timeline_path = os.environ.get("VIGIL_LOAD_TIMELINE")
_timeline = Timeline(window_s=float(os.environ.get("VIGIL_LOAD_WINDOW_S", "10")))


@events.test_start.add_listener
def _reset_timeline(**_: Any) -> None:
    _timeline.restart()


@events.request.add_listener
def _record(name: str, response_time: float, exception: BaseException | None, **_: Any) -> None:
    if _timeline_path:
        _timeline.add(name, response_time, failed=exception is not None)


@events.quitting.add_listener
def _write_timeline(**_: Any) -> None:
    if _timeline_path:
        _timeline.write(_timeline_path)
