"""``vigil drift run|schedule`` and ``vigil simulate``; also ``python -m service.cli.monitoring``.

Heavy imports (Evidently, pandas) happen inside the commands so ``vigil --help`` stays fast.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from service.settings import DriftRule, Settings

if TYPE_CHECKING:
    from monitoring.drift.config import DriftConfig
    from monitoring.drift.result import DriftReport
    from monitoring.simulate import Shift

drift_app = typer.Typer(
    no_args_is_help=True, help="Data, prediction and model drift of logged traffic (Evidently)."
)
console = Console(stderr=True)

EXIT_ERROR = 1
EXIT_DRIFT = 3  # only with --fail-on-drift
EXIT_NO_RUNS = 4  # `drift history` of a known model that has not been analysed yet

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name in the store.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Window start, ISO 8601 (default: end of the last run, else 24 h ago)."),
]
UntilOpt = Annotated[str | None, typer.Option(help="Window end, ISO 8601 (default: now).")]
ShareOpt = Annotated[
    float | None,
    typer.Option(help="Share of drifted features that flags dataset drift (default 0.5)."),
]
RuleOpt = Annotated[
    DriftRule | None,
    typer.Option(
        help="Dataset-drift rule: importance-weighted share, or Evidently's plain share "
        "(default VIGIL_DRIFT_RULE, importance)."
    ),
]
HtmlOpt = Annotated[
    bool,
    typer.Option(
        "--html/--no-html",
        help="Render drift.html with Evidently (default on; its cost does not grow with the "
        "window, about 15 s; --no-html writes drift.json only).",
    ),
]


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not ISO 8601 (e.g. 2026-01-31T12:00:00Z)", param_hint=name
        ) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _line(text: str) -> None:
    """The one-line summary: never wrapped, never read as rich markup (it holds [flags])."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=EXIT_ERROR)


def summary_line(report: DriftReport, where: Path | None) -> str:
    flags = [name for name, on in report.flags.to_dict().items() if on]
    text = (
        f"{report.model} {report.status.value}: {report.rows} rows "
        f"{report.since:%Y-%m-%dT%H:%M:%SZ} → {report.until:%Y-%m-%dT%H:%M:%SZ}"
        f"{' [' + ', '.join(flags) + ']' if flags else ''}"
    )
    if report.message:
        text += f" — {report.message}"
    if where is not None:
        text += f" — {where / 'drift.json'}"
    return text


def _config(
    settings: Settings,
    drift_share: float | None,
    rule: DriftRule | None = None,
    segment_by: str | None = None,
) -> DriftConfig:
    from monitoring.drift.config import DriftConfig

    extra: dict[str, object] = {} if drift_share is None else {"drift_share": drift_share}
    if rule is not None:
        extra["rule"] = rule.value
    if segment_by:
        extra["segment_by"] = segment_by
    return DriftConfig.from_settings(settings, **extra)


def _print_segments(report: DriftReport) -> None:
    """Segments worst first; those too small to judge last, shown rather than hidden."""
    from rich.table import Table

    for v in report.versions:
        if v.segments is None:
            continue
        seg = v.segments
        table = Table(
            seg.key,
            "rows",
            "status",
            "weighted",
            "est. acc",
            "real acc/MAE",
            "drifted features",
            title=f"v{v.version} by {seg.key} (≥ {seg.min_rows} rows analysed)",
        )
        for s in seg.segments:
            est = None if s.estimated is None else s.estimated.get("accuracy")
            real = None if s.realized is None else s.realized.get("accuracy", s.realized.get("mae"))
            table.add_row(
                s.value,
                str(s.rows),
                s.status.value,
                _fmt(s.weighted_share),
                _fmt(est),
                _fmt(real),
                ", ".join(s.drifted_features[:4]) or "-",
            )
        console.print(table)


def _print_ranking(report: DriftReport) -> None:
    """The drifted features, most consequential first (importance times drift score)."""
    from rich.table import Table

    for v in report.versions:
        if v.verdict is None or not v.verdict.ranking:
            continue
        table = Table(
            "rank", "feature", "importance", "score", "impact", title=f"v{v.version} drifted"
        )
        for i, r in enumerate(v.verdict.ranking, start=1):
            imp = "-" if r.importance is None else f"{r.importance:.3f}"
            table.add_row(str(i), r.feature, imp, f"{r.score:.3f}", f"{r.impact:.4f}")
        console.print(table)


@drift_app.command("run")
def run_cmd(
    model: ModelOpt,
    since: SinceOpt = None,
    until: UntilOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write drift.json and drift.html into DIR.")
    ] = None,
    drift_share: ShareOpt = None,
    rule: RuleOpt = None,
    segment_by: Annotated[
        str | None,
        typer.Option(
            help="Also analyse each value of this metadata key or categorical feature "
            "(default VIGIL_DRIFT_SEGMENT_BY)."
        ),
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option(help=f"Exit {EXIT_DRIFT} when drift is detected.")
    ] = False,
    html: HtmlOpt = True,
) -> None:
    """Analyse one window of logged traffic against each served version's reference sample."""
    from model_store.errors import StoreError
    from monitoring.drift.job import run_drift
    from monitoring.drift.result import Status

    settings = Settings()
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    cfg = _config(settings, drift_share, rule, segment_by)
    try:
        with console.status(f"drift of {model}…") as status:
            report = run_drift(
                settings,
                model,
                start,
                end,
                out,
                cfg=cfg,
                progress=lambda m: status.update(m),
                html=html,
            )
    except (StoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    if report.push_error:
        console.print(f"[bold red]error:[/] pushing gauges failed: {report.push_error}")
    _print_ranking(report)
    _print_segments(report)
    _line(summary_line(report, report.directory))
    if report.status is Status.ERROR or report.push_error:
        raise typer.Exit(code=EXIT_ERROR)
    if fail_on_drift and report.status is Status.DRIFT:
        raise typer.Exit(code=EXIT_DRIFT)


@drift_app.command("schedule")
def schedule_cmd(
    every: Annotated[str, typer.Option(help="Interval between runs: 30s, 15m, 1h30m, 1d.")] = "15m",
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model to watch (repeatable; default: every model)."),
    ] = None,
    drift_share: ShareOpt = None,
    rule: RuleOpt = None,
    html: HtmlOpt = True,
) -> None:
    """Run the drift job every interval in the foreground until SIGTERM or SIGINT (exit 0)."""
    from model_store.store import ModelStore
    from monitoring.drift.job import run_drift
    from monitoring.drift.schedule import run_every, stop_on_signals
    from service.durations import parse_duration

    try:
        interval = parse_duration(every).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--every") from None
    settings = Settings()
    cfg = _config(settings, drift_share, rule)
    stop = threading.Event()

    def one_round() -> None:
        names = model or ModelStore(settings.model_store).models()
        if not names:
            print(f"{_stamp()} no models in the store {settings.model_store}", flush=True)
        for name in names:
            stamp = _stamp()
            try:
                report = run_drift(settings, name, cfg=cfg, html=html)
            except Exception as exc:  # one model's failure must not stop the loop
                print(f"{stamp} {name} error: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"{stamp} {summary_line(report, report.directory)}", flush=True)

    console.print(f"drift schedule: every {every} ({interval:g} s); SIGTERM or Ctrl-C stops it")
    with stop_on_signals(stop):
        runs = run_every(interval, one_round, stop)
    console.print(f"drift schedule stopped cleanly after {runs} rounds")


@drift_app.command("history")
def history_cmd(
    model: ModelOpt,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table.")] = (
        False
    ),
) -> None:
    """One row per drift run of MODEL: time, rows, verdicts, weighted share, estimated and
    realized accuracy (exit 1: unknown model; exit 4: no runs yet)."""
    import json

    from model_store.errors import StoreError
    from model_store.store import ModelStore, check_model_name
    from monitoring.drift.history import history

    settings = Settings()
    try:
        check_model_name(model)
        known = bool(ModelStore(settings.model_store).versions(model))
    except StoreError as exc:
        raise _fail(str(exc)) from None
    rows = history(settings.reports_dir, model)
    if not rows and not known:
        raise _fail(f"model {model!r} is not in the store {settings.model_store} and has no runs")
    if not rows:
        console.print(f"{model}: no drift runs yet (run `vigil drift run --model {model}`)")
        raise typer.Exit(code=EXIT_NO_RUNS)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _history_table(model, rows)
    drifted = sum(r["status"] == "drift" for r in rows)
    _line(
        f"{model}: {len(rows)} runs from {rows[0]['started_at']} to {rows[-1]['started_at']}, "
        f"{drifted} with drift"
    )


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _history_table(model: str, rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    table = Table(
        "started",
        "window until",
        "rows",
        "status",
        "flags",
        "rule",
        "share",
        "weighted",
        "est. acc",
        "real acc",
        "real MAE",
        title=f"drift history of {model}",
    )
    for r in rows:
        flags = r["flags"]
        table.add_row(
            str(r["started_at"])[:19],
            str(r["until"])[:19],
            _fmt(r["rows"]),
            _fmt(r["status"]),
            ", ".join(flags) if isinstance(flags, list) and flags else "-",
            _fmt(r["rule"]),
            _fmt(r["drifted_share"]),
            _fmt(r["weighted_share"]),
            _fmt(r["estimated_accuracy"]),
            _fmt(r["realized_accuracy"]),
            _fmt(r.get("realized_mae")),
        )
    Console(width=200).print(table)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _drift_pairs(values: list[str]) -> dict[str, Shift]:
    """FEATURE=SHIFT (a numeric feature, in standard deviations) or FEATURE=CATEGORY:SHARE (a
    categorical feature's mix: CATEGORY then holds SHARE of the rows)."""
    from monitoring.simulate import CategoryShift

    out: dict[str, Shift] = {}
    for value in values:
        feature, sep, shift = value.partition("=")
        category, colon, share = shift.rpartition(":")
        try:
            out[feature.strip()] = (
                CategoryShift(category, float(share)) if colon and category else float(shift)
            )
        except ValueError:
            sep = ""
        if not sep or not feature.strip():
            raise typer.BadParameter(
                f"{value!r} is not FEATURE=SHIFT or FEATURE=CATEGORY:SHARE", param_hint="--drift"
            )
    return out


def _metadata_pairs(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, tag = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--metadata")
        out[key.strip()] = tag
    return out


def simulate(
    model: ModelOpt,
    rows: Annotated[int, typer.Option(min=1, help="Rows to send.")] = 1000,
    url: Annotated[str, typer.Option(help="Base URL of the running service.")] = (
        "http://127.0.0.1:8000"
    ),
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="FEATURE=SHIFT: shift a numeric feature by SHIFT standard deviations; "
            "FEATURE=CATEGORY:SHARE: make CATEGORY SHARE of a categorical feature's values "
            "(a category never seen in training too). Repeatable."
        ),
    ] = None,
    label_noise: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Classifiers: share of feedback labels flipped (0 to 1). Regressors: "
            "standard deviation of Gaussian noise added to the targets, in target SDs.",
        ),
    ] = 0.0,
    feedback: Annotated[bool, typer.Option(help="Post the true labels to /v1/feedback.")] = False,
    batch: Annotated[int, typer.Option(min=1, help="Rows per request.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the sampled rows and label noise.")] = 0,
    metadata: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE sent as request metadata (repeatable), e.g. region=eu."),
    ] = None,
) -> None:
    """Send realistic traffic drawn from the demo data of MODEL (a demo model) to a running
    Vigil."""
    from monitoring.simulate import SimulationError, run_simulation

    if label_noise and not feedback:
        raise typer.BadParameter("label noise applies to feedback: add --feedback")
    shifts = _drift_pairs(drift or [])
    tags = _metadata_pairs(metadata or [])
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{model} ← {url}", total=rows)
            summary = run_simulation(
                url,
                model,
                rows,
                batch=batch,
                drift=shifts,
                label_noise=label_noise,
                feedback=feedback,
                feedback_token=Settings().feedback_token.get_secret_value(),
                seed=seed,
                on_rows=lambda n: progress.advance(task, n),
                metadata=tags,
            )
    except SimulationError as exc:
        raise _fail(str(exc)) from None
    _line(summary.line())
    if summary.errors or summary.feedback_errors:
        raise typer.Exit(code=EXIT_ERROR)


app = typer.Typer(no_args_is_help=True, help="Vigil monitoring commands.")
app.add_typer(drift_app, name="drift")
app.command("simulate")(simulate)

if __name__ == "__main__":
    app()
