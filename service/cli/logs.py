"""``vigil logs …`` and ``vigil backtest``: the I/O log for data scientists."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from model_store.errors import StoreError
from service.errors import VigilError
from service.settings import Settings

logs_app = typer.Typer(no_args_is_help=True, help="The I/O log: export and retention.")
console = Console(stderr=True)

SinceOpt = Annotated[datetime | None, typer.Option(help="Window start (ISO 8601, UTC if no zone).")]
UntilOpt = Annotated[Optional[datetime], typer.Option(help="Window end, exclusive (ISO 8601).")]  # noqa: UP045


def parse_age(text: str) -> timedelta:
    m = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r}: use a number and a unit, e.g. 30d, 12h, 90m")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(
        **{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n}
    )


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


@logs_app.command("prune")
def prune(
    older_than: Annotated[str, typer.Option(help="Delete records older than this, e.g. 30d.")],
) -> None:
    """Delete logged records older than the given age (retention)."""
    from service.iolog.retention import prune_store

    cutoff = datetime.now(UTC) - parse_age(older_than)
    try:
        counts = prune_store(Settings(), cutoff)
    except VigilError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"pruned records before {cutoff:%Y-%m-%d %H:%M} UTC: {counts}")


def backtest_cmd(
    model: Annotated[str, typer.Option(help="Model name.")],
    candidate: Annotated[int, typer.Option(help="Version to replay the traffic on.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSON report here.")] = None,  # noqa: UP045
) -> None:
    """Replay logged inputs of a window on a candidate version and compare with what was served."""
    from service.offline.backtest import backtest

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
    except (VigilError, StoreError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    table = Table(
        "served version",
        "rows",
        "label agreement",
        "mean |Δp|",
        "max |Δp|",
        "labelled",
        "served acc",
        f"v{candidate} acc",
    )
    for v, r in report["per_version"].items():
        sq, cq = r.get("served_quality", {}), r.get("candidate_quality", {})
        table.add_row(
            v, str(r["rows_replayed"]), f"{r['label_agreement']:.4f}",
            f"{r['probability_diff']['mean']:.3g}", f"{r['probability_diff']['max']:.3g}",
            str(r["labelled_rows"]),
            f"{sq['accuracy']:.4f}" if sq else "-", f"{cq['accuracy']:.4f}" if cq else "-",
        )  # fmt: skip
    Console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    console.print(
        f"replayed {report['rows']} rows of {model} on v{candidate}"
        + (f"; report in {out}" if out else "")
    )
