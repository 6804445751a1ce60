"""``vigil rollout …``: start, inspect, step, promote and abort a rollout in the model store."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from model_store.errors import StoreError
from model_store.rollout import Mode, Rollouts, RolloutState
from model_store.store import ModelStore
from service.settings import Settings

rollout_app = typer.Typer(
    no_args_is_help=True,
    help="Roll a candidate version out beside the production one (shadow, then canary).",
)
console = Console(stderr=True)
out = Console()
Reason = Annotated[Optional[str], typer.Option(help="Why, recorded in the model's history.")]  # noqa: UP045


def _rollouts() -> Rollouts:
    return Rollouts(ModelStore(Settings().model_store))


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def _gate_values(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` options as a dict; the values are checked by the Gates model."""
    gates: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"--gate {pair!r}: expected NAME=VALUE, e.g. max_error_rate=0.02")
        gates[name.strip()] = _json_or_text(value.strip())
    return gates


def _json_or_text(value: str) -> Any:
    if value.lower() == "none":
        return None
    try:
        return json.loads(value)  # 500, 0.02, null
    except ValueError:
        return value  # accuracy


def _summary(state: RolloutState) -> str:
    share = f"{state.percent:g} %" if state.mode is Mode.CANARY else f"sample {state.sample:g}"
    return (
        f"{state.model}: v{state.candidate_version} {state.mode.value} ({share}) beside "
        f"v{state.primary_version}, revision {state.revision}"
    )


@rollout_app.command("start")
def start_cmd(
    model: str,
    version: int,
    mode: Annotated[Mode, typer.Option(help="shadow: copies of requests; canary: a share.")],
    percent: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Canary: share of requests the candidate answers (default 10)."),
    ] = None,
    sample: Annotated[
        float, typer.Option(help="Shadow: share of requests copied to the candidate.")
    ] = 1.0,
    auto: Annotated[bool, typer.Option(help="Let the automatic loop step and end it.")] = False,
    gate: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Gate threshold NAME=VALUE (repeatable), e.g. min_requests=500."),
    ] = None,
    reason: Reason = None,
) -> None:
    """Start rolling VERSION out beside the version the alias names now."""
    try:
        state = _rollouts().start(
            model, version, mode, percent=percent, sample=sample, auto=auto,
            gates=_gate_values(gate or []), alias=Settings().alias, reason=reason,
        )  # fmt: skip
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(f"started: {_summary(state)}")


@rollout_app.command("status")
def status_cmd(
    model: str,
    as_json: Annotated[bool, typer.Option("--json", help="State, comparison and gates.")] = False,
) -> None:
    """The running rollout, with the comparison and gate verdicts read from the I/O log."""
    from service.offline.rollout_report import rollout_report

    try:
        state = _rollouts().require(model)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    with console.status("reading the I/O log…"):
        report = rollout_report(Settings(), state)
    if as_json:
        out.print_json(json.dumps({**state.model_dump(mode="json"), **report}))
        return
    out.print(_summary(state))
    if report.get("comparison") is None:
        out.print(f"[yellow]{report.get('comparison_error', 'no comparison')}[/]")
        return
    table = Table("gate", "verdict", "safety", "observed", "threshold", "detail")
    for g in report["gate_results"]:
        table.add_row(
            g["name"], g["verdict"], "yes" if g["safety"] else "", _num(g["observed"]),
            _num(g["threshold"]), g["detail"],
        )  # fmt: skip
    out.print(table)
    out.print(f"decision: [bold]{report['decision']}[/]")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@rollout_app.command("step")
def step_cmd(
    model: str,
    percent: Annotated[float, typer.Option(help="New canary share, 0-100.")],
    reason: Reason = None,
) -> None:
    """Change the canary share (a shadow rollout stepped above 0 becomes a canary)."""
    try:
        state = _rollouts().step(model, percent, reason=reason)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(f"stepped: {_summary(state)}")


@rollout_app.command("promote")
def promote_cmd(model: str, reason: Reason = None) -> None:
    """Make the candidate the alias's version and end the rollout."""
    rollouts = _rollouts()
    try:
        state = rollouts.require(model)
        rollouts.store.verified_model_bytes(model, state.candidate_version)
        rollouts.promote(model, expected_revision=state.revision, reason=reason)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{model}: {state.alias} → v{state.candidate_version} (was v{state.primary_version})"
    )


@rollout_app.command("abort")
def abort_cmd(model: str, reason: Reason = None) -> None:
    """End the rollout; the primary version keeps serving."""
    try:
        state = _rollouts().abort(model, reason=reason)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{model}: rollout of v{state.candidate_version} aborted; v{state.primary_version} serves"
    )
