"""The drift job: a window of logged traffic per served version against its reference sample.

``core.analyse`` knows nothing of the log store; ``job.run_drift`` reads the window (sampled as
it streams, ``window.Sampler``), writes ``drift.json`` + ``drift.html``, keeps the run index and
pushes gauges; ``reference`` keeps what depends on the reference alone beside it.
"""

from monitoring.drift.config import DriftConfig
from monitoring.drift.result import DriftReport, Status, VersionResult

__all__ = ["DriftConfig", "DriftReport", "Status", "VersionResult"]
