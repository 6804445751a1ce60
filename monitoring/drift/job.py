"""``vigil drift run``: read a window of the I/O log, analyse each served version, write
``drift.json`` + ``drift.html``, push gauges, record the run in the index."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import evidently
import pyarrow.compute as pc

from model_store.errors import ModelNotFoundError, StoreError
from model_store.log_columns import PREDICTION_COLUMN, proba_column
from model_store.store import ModelStore, check_model_name, write_atomic
from monitoring.drift import push as pushgateway
from monitoring.drift.config import DriftConfig
from monitoring.drift.core import DriftInputError, analyse, watched_columns
from monitoring.drift.html import write_html
from monitoring.drift.index import RunIndex, new_run_id
from monitoring.drift.reference import load_reference
from monitoring.drift.result import DriftReport, Status, VersionResult
from monitoring.drift.retention import prune_model_reports
from monitoring.drift.segments import METADATA_COLUMN, analyse_segments
from monitoring.drift.window import FEEDBACK_COLUMN, Sampler, WindowSample
from service.iolog.readahead import read_ahead
from service.iolog.reader import open_predictions
from service.settings import Settings

DEFAULT_WINDOW = timedelta(hours=24)
JSON_FILE = "drift.json"
HTML_FILE = "drift.html"
log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _quiet(_message: str) -> None:
    return None


def run_drift(
    settings: Settings,
    model: str,
    since: datetime | None = None,
    until: datetime | None = None,
    out_dir: Path | None = None,
    *,
    cfg: DriftConfig | None = None,
    progress: Progress = _quiet,
    html: bool = True,
) -> DriftReport:
    """One drift run. Problems with the data become ``status: error`` in the written report;
    only an unknown model or an unwritable report directory raise. ``html=False`` skips
    drift.html (Evidently's rendering is most of a run's time on a small window)."""
    check_model_name(model)
    store = ModelStore(settings.model_store)
    if not store.versions(model):
        raise ModelNotFoundError(f"model {model!r} is not in the store {store.root}")
    cfg = cfg or DriftConfig.from_settings(settings)
    index = RunIndex(settings.reports_dir / model)
    started = datetime.now(UTC)
    end = utc(until) or started
    start = utc(since) or index.default_since() or end - DEFAULT_WINDOW
    report = DriftReport(
        run_id=new_run_id(started),
        model=model,
        since=start,
        until=end,
        started_at=started,
        finished_at=started,
        config=cfg.to_dict(),
        engine=f"evidently {evidently.__version__}",
    )
    try:
        _analyse_window(settings, store, report, cfg, progress)
    except Exception as exc:  # a broken window must end in a report, not a crash loop
        log.exception("drift run %s of %s failed", report.run_id, model)
        report.error = f"{type(exc).__name__}: {exc}"
    report.finished_at = datetime.now(UTC)
    target = out_dir or index.dir / report.run_id
    report.directory = target
    _write(settings, report, target, progress, html)
    index.append(report, live=until is None, path=target)
    prune_model_reports(
        index.dir,
        max_age=settings.drift_reports_max_age,
        max_runs=settings.drift_reports_max_runs,
    )
    return report


def _analyse_window(
    settings: Settings, store: ModelStore, report: DriftReport, cfg: DriftConfig, say: Progress
) -> None:
    if report.since >= report.until:
        raise DriftInputError(f"the window is empty: since {report.since} is not before until")
    say(f"reading {report.model} predictions {report.since:%Y-%m-%d %H:%M} → {report.until:%H:%M}")
    windows = _read_window(settings, store, report, cfg, say)
    report.rows = sum(w.rows for w in windows.values())
    if not report.rows:
        report.note = "no predictions logged in the window"
        return
    for v, window in sorted(windows.items()):
        say(f"analysing {report.model} v{v}: {window.rows} rows")
        report.versions.append(_analyse_version(store, report.model, v, window, cfg))


def _read_window(
    settings: Settings, store: ModelStore, report: DriftReport, cfg: DriftConfig, say: Progress
) -> dict[int, WindowSample]:
    """Each served version's sample, labelled rows and row count, gathered batch by batch."""
    stream = open_predictions(
        settings, report.model, since=report.since, until=report.until,
        columns=_columns(store, report.model, cfg),
    )  # fmt: skip
    samplers: dict[int, Sampler] = {}
    read = 0
    for batch in read_ahead(stream):
        read += batch.num_rows
        if "status" in batch.schema.names:  # only what was served
            batch = batch.filter(pc.less(batch.column("status"), 400))
        versions = batch.column("version")
        served = [v for v in pc.unique(versions).to_pylist() if v is not None]
        for v in served:
            one = len(served) == 1 and not versions.null_count
            rows = batch if one else batch.filter(pc.equal(versions, v))
            sampler = samplers.setdefault(int(v), Sampler(cfg.max_rows, cfg.seed))
            sampler.add(rows)  # in Arrow: only the sampled and labelled rows become pandas
        say(f"reading {report.model}: {read:,} rows")
    return {v: s.result() for v, s in samplers.items()}


def _columns(store: ModelStore, model: str, cfg: DriftConfig) -> list[str] | None:
    """What drift reads of the log: features, outputs, label (no ids or latencies; metadata only
    when segments may come from it)."""
    columns = {"version", "status", PREDICTION_COLUMN, FEEDBACK_COLUMN}
    if cfg.segment_by:
        columns.add(METADATA_COLUMN)
    for v in store.versions(model):
        try:
            manifest = store.manifest(model, v)
        except StoreError:
            return None  # cannot tell what a broken version logs: read everything
        columns.update(manifest.feature_names)
        columns.update(proba_column(c) for c in manifest.outputs.class_names)
    return sorted(columns)


def _analyse_version(
    store: ModelStore, model: str, version: int, window: WindowSample, cfg: DriftConfig
) -> VersionResult:
    try:
        manifest = store.manifest(model, version)
        ref = load_reference(store, model, version, watched_columns(manifest), cfg.seed)
        result = analyse(window, ref.frame, manifest, cfg, ref.stats)
        if cfg.segment_by and result.status is not Status.INSUFFICIENT_DATA:
            result.segments = analyse_segments(
                window, ref.frame, manifest, cfg, cfg.segment_by, ref.stats
            )
        return result
    except (StoreError, DriftInputError) as exc:
        log.warning("drift of %s v%d cannot be analysed: %s", model, version, exc)
        return VersionResult(
            version=version,
            status=Status.ERROR,
            rows=window.rows,
            sample_cap=cfg.max_rows,
            message=str(exc),
        )


def _write(
    settings: Settings, report: DriftReport, target: Path, say: Progress, html: bool
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    report.files = {"json": JSON_FILE, "html": None}
    if html:
        _write_html(report, target, say)
    if settings.pushgateway_url:
        say(f"pushing gauges to {settings.pushgateway_url}")
        try:
            pushgateway.push(settings.pushgateway_url, report)
            report.pushed = True
        except OSError as exc:
            log.warning("pushing drift gauges to %s failed: %s", settings.pushgateway_url, exc)
            report.pushed, report.push_error = False, str(exc)
    _write_json(target / JSON_FILE, report)


def _write_html(report: DriftReport, target: Path, say: Progress) -> None:
    say("writing drift.html (Evidently)")
    try:
        write_html(report, target / HTML_FILE)
        report.files["html"] = HTML_FILE
    except Exception as exc:  # the numbers stay valid without their pictures
        log.exception("drift.html of run %s could not be rendered", report.run_id)
        report.html_error = f"{type(exc).__name__}: {exc}"


def _write_json(path: Path, report: DriftReport) -> None:
    write_atomic(path, json.dumps(report.to_dict(), indent=2, allow_nan=False).encode())
