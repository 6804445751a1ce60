"""``vigil logs …`` and ``vigil backtest``: the I/O log for data scientists."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from service.durations import parse_duration
from service.errors import VigilError
from service.settings import Settings

logs_app = typer.Typer(no_args_is_help=True, help="The I/O log: export, retention and compaction.")
console = Console(stderr=True)

SinceOpt = Annotated[datetime | None, typer.Option(help="Window start (ISO 8601, UTC if no zone).")]
UntilOpt = Annotated[Optional[datetime], typer.Option(help="Window end, exclusive (ISO 8601).")]  # noqa: UP045


@logs_app.command("export")
def export(
    model: Annotated[str, typer.Option(help="Model name.")],
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv")],
    version: Annotated[Optional[int], typer.Option(help="Only this version.")] = None,  # noqa: UP045
    since: SinceOpt = None,
    until: UntilOpt = None,
) -> None:
    """Export logged predictions (inputs, outputs, labels, metadata) of a window, streamed."""
    from service.iolog.export import SUFFIXES, export
    from service.iolog.reader import CorruptLogFile, open_predictions

    # The ~90 k objects the imports made live as long as the process: out of the collector's
    # sight they cost no full collection, at exit either (~0.2 s of CPU of a 1 M-row export).
    gc.freeze()
    if out.suffix not in SUFFIXES:
        console.print("[red]error:[/] --out must end in .parquet or .csv")
        raise typer.Exit(1)
    columns = (TextColumn("exporting {task.fields[model]}"), TextColumn("{task.completed:,} rows"))
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("export", total=None, model=model)
            stream = open_predictions(Settings(), model, version, since, until)
            done = export(stream, out, lambda rows: bar.update(task, completed=rows))
    except (VigilError, CorruptLogFile) as exc:  # the file is left as it was: nothing half-written
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"exported {done.rows} rows ({done.labelled} labelled) of {model} to {out}")


@logs_app.command("feedback")
def feedback_history(
    model: Annotated[str, typer.Option(help="Model name.")],
    request_id: Annotated[Optional[str], typer.Option(help="Only this request's labels.")] = None,  # noqa: UP045
    out: Annotated[Optional[Path], typer.Option(help="Write .parquet or .csv instead.")] = None,  # noqa: UP045
) -> None:
    """Every label received (time, source), oldest first; `in_force` marks the one used.

    A wrong or malicious label is undone by sending the right one again: the latest wins.
    """
    from service.iolog.labels import labels_in_force
    from service.iolog.reader import read_feedback

    df = read_feedback(Settings(), model)
    if request_id is not None:
        df = df[df["request_id"] == request_id].reset_index(drop=True)
    df["in_force"] = df.index.isin(labels_in_force(df).index)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_csv(out, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        table = Table("received_at", "request_id", "row", "label", "source", "in_force")
        for r in df.itertuples(index=False):
            table.add_row(
                f"{r.received_at:%Y-%m-%d %H:%M:%S.%f}", r.request_id, str(r.row), r.label,
                r.source, "yes" if r.in_force else "",
            )  # fmt: skip
        Console().print(table)
    relabelled = len(df) - int(df["in_force"].sum())
    console.print(
        f"{len(df)} labels of {model} for {int(df['in_force'].sum())} rows "
        f"({relabelled} superseded by a later label)"
    )


@logs_app.command("prune")
def prune(
    older_than: Annotated[str, typer.Option(help="Delete records older than this, e.g. 30d.")],
) -> None:
    """Delete logged records older than the given age (retention)."""
    from monitoring.drift.retention import prune_reports
    from service.iolog.retention import prune_store

    try:
        age = parse_duration(older_than, allow_zero=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    cutoff = datetime.now(UTC) - age
    settings = Settings()
    try:
        counts = prune_store(settings, cutoff)
    except VigilError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"pruned records before {cutoff:%Y-%m-%d %H:%M} UTC: {counts}")
    reports = prune_reports(
        settings.reports_dir,
        max_age=settings.drift_reports_max_age,
        max_runs=settings.drift_reports_max_runs,
    )
    console.print(
        f"pruned {reports.runs} drift report folders ({reports.bytes / 1e6:.1f} MB) beyond "
        f"{settings.drift_reports_max_age} or {settings.drift_reports_max_runs} runs per model"
    )


@logs_app.command("compact")
def compact_cmd(
    older_than: Annotated[
        str, typer.Option(help="Merge files delivered longer ago than this (0s: everything).")
    ] = "1h",
    target_mb: Annotated[int, typer.Option(min=1, help="Size of the merged files, in MB.")] = 128,
    grace: Annotated[
        str, typer.Option(help="Merged inputs are deleted by the first run this long after.")
    ] = "10m",
) -> None:
    """Merge each partition's small delivered files into files of the target size (Parquet
    directory or s3:// store; readers never see a row missing or twice)."""
    from service.iolog.compaction import compact
    from service.iolog.parquet_store import ParquetStore
    from service.iolog.store import open_store

    try:
        age = parse_duration(older_than, allow_zero=True)
        keep = parse_duration(grace, allow_zero=True)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = Settings()
    try:
        store = open_store(settings)
        if not isinstance(store, ParquetStore):
            console.print("PostgreSQL keeps rows in tables: nothing to compact")
            return
        columns = (TextColumn("compacting"), TextColumn("{task.fields[partition]}"))
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("compact", total=None, partition="")
            done = compact(
                store, age, target_bytes=target_mb * 1024 * 1024, grace=keep,
                progress=lambda p: bar.update(task, partition=p),
            )  # fmt: skip
    except VigilError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"compacted {done.files_in} files into {done.files_out} in {done.partitions} partitions "
        f"({done.rows:,} rows, {done.bytes_in / 1e6:.1f} MB), deleted {done.deleted} superseded "
        f"files, in {done.seconds:.1f} s ({settings.log_store_display})"
    )


quarantine_app = typer.Typer(
    no_args_is_help=True,
    help="Spool segments the deliverer gave up on (VIGIL_DELIVERY_MAX_ATTEMPTS failures).",
)
logs_app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list() -> None:
    """Show each quarantined segment: why, how often it failed, its size and records."""
    from service.iolog import quarantine

    entries = quarantine.listing(Settings().spool_dir)
    for _, e in entries:
        records = "?" if e.records is None else str(e.records)
        typer.echo(
            f"{e.segment}  attempts={e.attempts}  size={e.size} B  records={records}  "
            f"since={e.quarantined_at or '?'}\n  reason: {e.reason}"
        )
    console.print(f"{len(entries)} segment(s) in quarantine")


@quarantine_app.command("retry")
def quarantine_retry(
    segment: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Only this segment (repeatable); default: all."),
    ] = None,
) -> None:
    """Deliver quarantined segments now (once the cause is fixed), reporting each one."""
    from service.iolog import quarantine
    from service.iolog.deliver import deliver_segment, open_sink

    settings = Settings()
    entries = [
        (p, e)
        for p, e in quarantine.listing(settings.spool_dir)
        if not segment or e.segment in segment
    ]
    sink = open_sink(settings)
    failed = 0
    for path, e in entries:
        try:
            counts = deliver_segment(sink, path, e.segment)
        except Exception as exc:
            failed += 1
            again = quarantine.failed_again(path, e, f"{type(exc).__name__}: {exc}")
            typer.echo(f"{e.segment}: still failing (attempt {again.attempts}): {again.reason}")
            continue
        quarantine.release(path)
        typer.echo(f"{e.segment}: delivered {counts}")
    console.print(f"retried {len(entries)} segment(s): {len(entries) - failed} delivered")
    if failed:
        raise typer.Exit(1)


def backtest_cmd(
    model: Annotated[str, typer.Option(help="Model name.")],
    candidate: Annotated[int, typer.Option(help="Version to replay the traffic on.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON report here.")] = None,  # noqa: UP045
) -> None:
    """Replay logged inputs of a window on a candidate version and compare with what was served."""
    from service.offline.backtest import backtest, summary_table

    columns = (
        TextColumn("replaying"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),  # the window streams: its size is not known ahead
    )
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("replay", total=None)
            report = backtest(
                Settings(), model, candidate, since, until,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
    except VigilError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    headers, rows = summary_table(report)
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    console.print(
        f"replayed {report['rows']} rows of {model} on v{candidate}"
        + (f"; report in {out}" if out else "")
    )
