"""Rollout reports computed in a child process, so that a big window never stalls serving.

What users rely on: the report is the same as computed in place; a child that dies (killed for
memory) costs one report, which says why, and the next report works; an idle child is stopped.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psutil
import pytest

from model_store.rollout import Mode, Rollouts
from model_store.store import ModelStore
from service.offline.report_process import ReportProcess
from service.offline.rollout_report import rollout_report
from service.settings import Settings
from tests.conftest import MODEL


@pytest.fixture
def reports(settings: Settings) -> Iterator[ReportProcess]:
    rp = ReportProcess(settings, idle_s=0.0)
    yield rp
    rp.close()


def test_the_report_is_computed_in_a_child_and_equals_the_one_in_place(
    reports: ReportProcess, settings: Settings, store: ModelStore
) -> None:
    state = Rollouts(store).start(MODEL, 2, Mode.SHADOW)
    now = datetime.now(UTC)
    assert reports.report(state, now) == rollout_report(settings, state, now)
    (pid,) = reports.child_pids
    child = psutil.Process(pid)
    assert pid != os.getpid() and child.ppid() == os.getpid() and child.nice() >= 10


def test_a_child_that_dies_costs_one_report_and_the_next_works(
    reports: ReportProcess, store: ModelStore
) -> None:
    state = Rollouts(store).start(MODEL, 2, Mode.SHADOW)
    assert "decision" in reports.report(state)
    (pid,) = reports.child_pids
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    psutil.Process(pid).wait(10)
    lost = reports.report(state)
    assert lost["comparison"] is None and "process died" in lost["comparison_error"]
    again = reports.report(state)
    assert again["decision"] == "wait" and reports.child_pids != [pid]


def test_an_idle_child_is_stopped(reports: ReportProcess, store: ModelStore) -> None:
    state = Rollouts(store).start(MODEL, 2, Mode.SHADOW)
    reports.report(state)
    (pid,) = reports.child_pids
    reports.close_if_idle()  # idle_s=0: idle at once
    assert reports.child_pids == []
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the idle child did not exit"
        time.sleep(0.05)
