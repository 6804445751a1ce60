"""Objects routes depend on, stored on the app at creation (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.core.dataplane import DataPlane
from service.core.registry import ModelRegistry
from service.metrics import Metrics
from service.offline.report_process import ReportProcess
from service.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    dataplane: DataPlane
    metrics: Metrics
    reports: ReportProcess  # rollout reports, computed off this worker's interpreter


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt
