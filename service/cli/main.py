"""The ``vigil`` command line."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from model_store.errors import StoreError
from model_store.manifest import Manifest
from model_store.store import ModelStore
from service.cli.logs import backtest_cmd, logs_app
from service.cli.monitoring import drift_app, simulate
from service.cli.rollout import rollout_app
from service.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    no_args_is_help=True,
    help="Vigil: real-time inference with drift monitoring.",
    pretty_exceptions_show_locals=False,  # locals hold settings and URLs, passwords included
)
models_app = typer.Typer(no_args_is_help=True, help="The versioned model store.")
app.add_typer(models_app, name="models")
app.add_typer(logs_app, name="logs")
app.add_typer(drift_app, name="drift")
app.add_typer(rollout_app, name="rollout")
app.command("backtest")(backtest_cmd)
app.command("simulate")(simulate)
console = Console(stderr=True)
out = Console()


def _store() -> ModelStore:
    return ModelStore(Settings().model_store)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


@models_app.command("train-demo")
def train_demo_cmd(
    name: Annotated[
        str,
        typer.Argument(
            help="breast-cancer (binary classifier), diabetes (regressor), wine (3 classes), "
            "diabetes-mixed (regressor with categorical string features)."
        ),
    ] = "breast-cancer",
    c: Annotated[
        float,
        typer.Option(help="Regularisation scale: C of the classifiers, 1/alpha of the ridge."),
    ] = 1.0,
    promote: Annotated[bool, typer.Option(help="Make the new version `production`.")] = True,
) -> None:
    """Train a demo model (default `breast-cancer`), convert, check parity, register, promote."""
    from model_store.demo import train_demo_model

    try:
        with console.status("training, converting and checking parity…"):
            manifest = train_demo_model(_store(), name, c=c, promote=promote)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    metric = "r2" if manifest.is_regression else "accuracy"
    value = manifest.metrics.get(metric, float("nan"))
    console.print(
        f"registered [bold]{manifest.name}[/] v{manifest.version} sha256 {manifest.sha256[:12]}… "
        f"{metric} {value:.4f}{' → production' if promote else ''}"
    )


@models_app.command("list")
def list_cmd() -> None:
    """List models, versions and aliases."""
    store = _store()
    table = Table("model", "versions", "aliases")
    for name in store.models():
        aliases = ", ".join(f"{k}→v{v}" for k, v in store.aliases(name).items())
        table.add_row(name, ", ".join(map(str, store.versions(name))), aliases or "-")
    out.print(table)


@models_app.command("show")
def show_cmd(model: str, version: Annotated[Optional[int], typer.Argument()] = None) -> None:  # noqa: UP045
    """Print the manifest of a version (default: the production one)."""
    store = _store()
    try:
        v = version if version is not None else store.resolve(model, Settings().alias)
        manifest = store.manifest(model, v)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    out.print_json(manifest.model_dump_json())
    _show_importance(manifest)


def _show_importance(manifest: Manifest) -> None:
    """The ranking a person reads, on stderr so that stdout stays the manifest's JSON."""
    imp = manifest.feature_importance
    if imp is None:
        console.print(
            "feature importance: none recorded (registered before it existed, or without labelled "
            "rows); the drift job falls back to the plain share rule"
        )
        return
    table = Table(
        "rank",
        "feature",
        "importance",
        title=f"feature importance ({imp.method}, {imp.scoring}, {imp.n_repeats} repeats, "
        f"{imp.rows} {imp.data})",
    )
    for rank, (name, share) in enumerate(imp.ranked(), start=1):
        table.add_row(str(rank), name, f"{share:.3f}")
    console.print(table)


Reason = Annotated[Optional[str], typer.Option(help="Why, recorded in the model's history.")]  # noqa: UP045


@models_app.command("promote")
def promote_cmd(model: str, version: int, reason: Reason = None) -> None:
    """Point the alias at VERSION; running services follow within VIGIL_ALIAS_POLL_S."""
    store = _store()
    try:
        store.verified_model_bytes(model, version)
        previous = store.set_alias(model, version, Settings().alias, reason=reason)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{model}: {Settings().alias} → v{version} (was v{previous})")


@models_app.command("rollback")
def rollback_cmd(model: str, reason: Reason = None) -> None:
    """Move the alias back to the version it named before the last promote."""
    try:
        version = _store().rollback(model, Settings().alias, reason=reason)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{model}: {Settings().alias} → v{version}")


@models_app.command("history")
def history_cmd(
    model: str,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the newest N changes.")] = None,  # noqa: UP045
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Who changed what MODEL serves, when and why (oldest first)."""
    try:
        entries = _store().changes(model, limit)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps([e.model_dump(mode="json") for e in entries]))
        return
    table = Table("when (UTC)", "who", "action", "from", "to", "reason")
    for e in entries:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"), e.who, e.action.value,
            _v(e.from_version), _v(e.to_version), e.reason or "",
        )  # fmt: skip
    out.print(table)


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


@models_app.command("register")
def register_cmd(
    name: str,
    pipeline: Annotated[
        Path | None, typer.Option(help="Fitted scikit-learn estimator (joblib).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Training data (CSV or Parquet) with features and target."),
    ] = None,
    target: Annotated[str, typer.Option(help="Target column in --data.")] = "target",
    onnx: Annotated[Optional[Path], typer.Option(help="An existing ONNX model.")] = None,  # noqa: UP045
    schema: Annotated[Optional[Path], typer.Option(help="JSON schema file for --onnx.")] = None,  # noqa: UP045
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Reference data for --onnx (CSV or Parquet): features, and --target when "
            "labels are known (then feature importance is measured on it)."
        ),
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="Share of --data used for the parity check.")
    ] = 0.25,
    precision: Annotated[str, typer.Option(help="float32 or float64 ONNX inputs.")] = "float32",
    tolerance: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Parity tolerance: largest probability difference (classifiers), relative "
            "difference (regressors). Default 1e-4; 1e-3 for float32 HistGradientBoosting "
            "and LightGBM trees."
        ),
    ] = None,
    promote: Annotated[bool, typer.Option(help="Make the new version `production`.")] = False,
) -> None:
    """Register your own model: a fitted pipeline with its data, or an ONNX file with a schema."""
    from model_store.registration import register_onnx_file, register_sklearn

    store = _store()
    try:
        if onnx is not None:
            if schema is None:
                raise _fail("--onnx needs --schema (features, class names)")
            ref = None if reference is None else _read_frame(reference)
            manifest = register_onnx_file(
                store, name, onnx, json.loads(schema.read_text()), reference=ref, target=target
            )
        elif pipeline is not None and data is not None:
            import joblib
            import numpy as np

            frame = _read_frame(data)
            if target not in frame.columns:
                raise _fail(f"--data has no column {target!r}")
            y = frame.pop(target).to_numpy()
            if frame.empty:
                raise _fail("--data has no feature columns besides the target")
            rng = np.random.default_rng(0)
            mask = rng.random(len(frame)) < holdout
            estimator = joblib.load(pipeline)
            with console.status("converting and checking parity…"):
                manifest = register_sklearn(
                    store,
                    name,
                    estimator,
                    frame,
                    y,
                    holdout_mask=mask,
                    precision=precision,  # type: ignore[arg-type]
                    tolerance=tolerance,
                    target_name=target,
                )
        else:
            raise _fail("give --pipeline with --data, or --onnx with --schema")
        if promote:
            store.set_alias(name, manifest.version, Settings().alias)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    console.print(f"registered {manifest.name} v{manifest.version} sha256 {manifest.sha256[:12]}…")
    if manifest.feature_importance is None:
        console.print(
            "no feature importance: no labelled rows of two classes to measure it on "
            "(for --onnx, give --reference with a --target column)"
        )


def _read_frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (VIGIL_HOST).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port (VIGIL_PORT, default 8000).")] = None,  # noqa: UP045
    workers: Annotated[Optional[int], typer.Option(help="uvicorn worker processes.")] = None,  # noqa: UP045
) -> None:
    """Serve the model store over HTTP (trains the demo model first if the store is empty)."""
    import uvicorn

    if host:  # the app's settings (read in each worker) must know it: the console checks it
        os.environ["VIGIL_HOST"] = host
    settings = Settings()
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, and the default action would
    # end the process as killed (status 143). By then every accepted request is answered and
    # the spool is flushed: exit 0, the clean stop Docker and Kubernetes expect.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _check_log_store(settings)
    if settings.train_demo_if_empty and not ModelStore(settings.model_store).models():
        train_demo_cmd(name="breast-cancer", c=1.0, promote=True)
    n = workers or settings.workers
    # Metrics of every process (workers and the log deliverer) are summed at /metrics.
    own_mp_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_mp_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vigil-prom-")
        _use_multiprocess_values()
    deliverer = _start_deliverer(settings)
    try:
        uvicorn.run(
            "service.asgi:app",
            host=host or settings.host,
            port=port or settings.port,
            workers=n,
            log_level="warning",
            access_log=False,
            server_header=False,  # no "server: uvicorn" on every response
            timeout_graceful_shutdown=25,
        )
    finally:
        if deliverer is not None:
            deliverer.send_signal(signal.SIGTERM)  # one last round, then it exits
            try:
                deliverer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                deliverer.kill()
        if own_mp_dir:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _check_log_store(settings: Settings) -> None:
    from service.errors import LogStoreError
    from service.iolog.store import check_store

    if settings.iolog_enabled:
        try:
            check_store(settings)
        except LogStoreError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from None


def _use_multiprocess_values() -> None:
    """prometheus_client picks file-backed values at import when the directory is already set;
    if anything imported it before ``serve`` set it, pick again (metrics are created later)."""
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _start_deliverer(settings: Settings) -> subprocess.Popen[bytes] | None:
    """The I/O log deliverer, at a lower CPU priority than the workers it serves.

    Workers start only once it leads the spool; otherwise a worker could take the lead first
    and convert segments under its own GIL (it still does, as a fallback, if this one dies).
    """
    if not settings.iolog_enabled:
        return None
    from service.iolog.deliver import READY

    proc = subprocess.Popen(
        [sys.executable, "-m", "service.iolog.deliver", "--parent", str(os.getpid())],
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.nice(10),  # no threads exist yet in this process
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    if line != READY:
        console.print(f"[yellow]I/O log deliverer: {line or 'no answer in 30 s'}[/]")
    # Keep draining its stdout so that it can never block on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


def main() -> None:
    app()


if __name__ == "__main__":
    main()
