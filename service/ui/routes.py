"""The console's HTTP layer: access rules, forms, pages. Data comes from the plain modules beside
it; anything slow runs in a thread, never on the event loop."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.templating import Jinja2Templates

from model_store.errors import ModelNotFoundError
from model_store.store import ModelStore
from service.durations import parse_duration
from service.errors import InvalidInput, NotFound, PayloadTooLarge, Unauthorized, VigilError
from service.http.auth import check_token
from service.http.deps import Runtime, runtime
from service.http.routes_admin import admin_token, promote_version, rollback_model
from service.iolog.reader import CorruptLogFile
from service.settings import Settings
from service.ui import access as acc
from service.ui import charts, jobs, logs, overview
from service.ui.drift import drift_view, report_file
from service.ui.traffic import read_traffic

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
FORM_MAX_BYTES = 64 * 1024
WINDOWS = ("15m", "1h", "6h", "24h", "7d")
log = logging.getLogger("vigil.ui")


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


class _Off(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class UiRoute(APIRoute):
    """Every failure of a console route becomes an HTML page (or a redirect to the login)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _Redirect as r:
                return RedirectResponse(r.url, status_code=303)
            except _Off as off:
                return await _page(request, None, "off.html", 404, reason=off.reason)
            except VigilError as exc:
                return await _error(request, exc.status_code, exc.message)
            except CorruptLogFile as exc:
                return await _error(request, 503, str(exc))
            except Exception:
                log.exception("console error on %s %s", request.method, request.url.path)
                return await _error(request, 500, "internal error; the incident was logged")

        return guarded


router = APIRouter(prefix="/ui", route_class=UiRoute, include_in_schema=False)


class Ui:
    """One request's view of the console: who is in, and the CSRF cookie and token."""

    def __init__(self, request: Request, access: acc.Access) -> None:
        self.access = access
        self.rt: Runtime = runtime(request)
        given = request.cookies.get(acc.CSRF_COOKIE)
        self.new_csrf = None if given else acc.new_csrf_cookie()
        self.csrf_cookie: str = given or self.new_csrf or ""
        self.secure = request.url.scheme == "https"
        self.session: str | None = None

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    @property
    def csrf(self) -> str:
        return acc.csrf_token(self.access.key, self.csrf_cookie)

    def apply(self, response: Response) -> Response:
        cookie = {"httponly": True, "samesite": "strict", "secure": self.secure, "path": "/ui"}
        if self.new_csrf:
            response.set_cookie(acc.CSRF_COOKIE, self.new_csrf, **cookie)  # type: ignore[arg-type]
        if self.session:
            response.set_cookie(
                acc.SESSION_COOKIE, self.session, max_age=acc.SESSION_MAX_AGE_S,
                **cookie,  # type: ignore[arg-type]
            )  # fmt: skip
        return response


def _enabled(request: Request) -> acc.Access:
    access = acc.access(runtime(request).settings)
    if access.mode is acc.Mode.OFF:
        raise _Off(access.reason)
    return access


def _ui(request: Request) -> Ui:
    """The console for a signed-in reader: off, or a redirect to the login, otherwise."""
    access = _enabled(request)
    if access.needs_login and not acc.session_valid(
        access.key, request.cookies.get(acc.SESSION_COOKIE)
    ):
        if request.method != "GET":
            raise Unauthorized("console: sign in with VIGIL_ADMIN_TOKEN first")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _Redirect(f"/ui/login?next={quote(target)}")
    return Ui(request, access)


async def _form(request: Request, ui: Ui) -> dict[str, str]:
    """The urlencoded form, refused (403) unless it carries this session's CSRF token."""
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        raise PayloadTooLarge(f"form: larger than {FORM_MAX_BYTES} bytes")
    form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
    if not acc.csrf_valid(ui.access.key, request.cookies.get(acc.CSRF_COOKIE), form.get("csrf")):
        raise _Forbidden("csrf: the form's token is missing or stale; reload the page and retry")
    return form


class _Forbidden(VigilError):
    status_code = 403
    kind = "forbidden"


async def _page(
    request: Request, ui: Ui | None, template: str, status: int = 200, **context: Any
) -> Response:
    """The page rendered in a worker thread: a preview of 100 rows by 40 columns is thousands of
    template cells, too long to hold the event loop for."""
    values = {"request": request, "ui": ui, "now": datetime.now(UTC), **context}
    html = await asyncio.to_thread(TEMPLATES.get_template(template).render, values)
    response = HTMLResponse(html, status_code=status)
    return ui.apply(response) if ui else response


async def _error(request: Request, status: int, message: str) -> Response:
    return await _page(request, None, "error.html", status, code=status, message=message)


def _model(settings: Settings, model: str) -> str:
    if not ModelStore(settings.model_store).versions(model):
        raise ModelNotFoundError(f"model {model!r} is not in the store")
    return model


def _when(params: dict[str, str], name: str) -> datetime | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{name}: {text!r} is not a date and time (ISO 8601, UTC)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _version(params: dict[str, str], name: str = "version") -> int | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 10**9:
        raise InvalidInput(f"{name}: {text!r} is not a version number")
    return int(text)


def _window(params: dict[str, str], name: str) -> logs.Window:
    since, until = _when(params, "since"), _when(params, "until")
    if since and until and since >= until:
        raise InvalidInput("until: must be after since")
    return logs.Window(name, _version(params), since, until)


# -- sign-in ---------------------------------------------------------------------------------
def _next(target: str | None) -> str:
    ok = target and target.startswith("/ui") and "//" not in target and "\\" not in target
    return target if ok and target else "/ui"


@router.get("/login")
async def login_page(request: Request) -> Response:
    access = _enabled(request)
    if not access.needs_login:
        raise _Redirect("/ui")
    ui = Ui(request, access)
    return await _page(request, ui, "login.html", next=_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    access = _enabled(request)
    ui = Ui(request, access)
    form = await _form(request, ui)
    target = _next(form.get("next"))
    try:
        check_token(form.get("token", ""), access.key, "console")
    except Unauthorized as exc:
        return await _page(request, ui, "login.html", 401, next=target, error=exc.message)
    ui.session = acc.new_session(access.key)
    return ui.apply(RedirectResponse(target, status_code=303))


@router.post("/logout")
async def logout(request: Request) -> Response:
    ui = _ui(request)
    await _form(request, ui)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(acc.SESSION_COOKIE, path="/ui")
    return response


# -- pages -----------------------------------------------------------------------------------
@router.get("")
@router.get("/")
async def models_page(request: Request) -> Response:
    ui = _ui(request)
    rows = await asyncio.to_thread(overview.models_overview, ui.settings, datetime.now(UTC))
    return await _page(request, ui, "models.html", rows=rows, window=overview.OVERVIEW_WINDOW)


async def _model_page(
    request: Request, ui: Ui, model: str, status: int = 200, **extra: Any
) -> Response:
    detail = await asyncio.to_thread(overview.model_detail, ui.settings, model)
    return await _page(
        request, ui, "model.html", status, model=model, d=detail,
        admin_enabled=bool(ui.settings.admin_token.get_secret_value()),
        done=request.query_params.get("done"), **extra,
    )  # fmt: skip


@router.get("/models/{model}")
async def model_page(request: Request, model: str) -> Response:
    return await _model_page(request, _ui(request), model)


async def _admin_action(request: Request, model: str, action: str) -> Response:
    ui = _ui(request)
    form = await _form(request, ui)
    reason = form.get("reason", "").strip() or None
    try:
        check_token(form.get("token", ""), admin_token(ui.rt), "admin API")
        if action == "promote":
            version = _version(form)
            if version is None:
                raise InvalidInput("version: missing")
            await asyncio.to_thread(promote_version, ui.rt, model, version, reason)
            done = f"v{version} of {model} is served"
        else:
            target = await asyncio.to_thread(rollback_model, ui.rt, model, reason)
            done = f"rolled {model} back to v{target}"
    except VigilError as exc:  # shown as the admin API would answer it
        error = {"status": exc.status_code, "message": exc.message, "action": action}
        return await _model_page(request, ui, model, exc.status_code, action_error=error)
    raise _Redirect(f"/ui/models/{quote(model)}?done={quote(done)}")


@router.post("/models/{model}/promote")
async def promote(request: Request, model: str) -> Response:
    return await _admin_action(request, model, "promote")


@router.post("/models/{model}/rollback")
async def rollback(request: Request, model: str) -> Response:
    return await _admin_action(request, model, "rollback")


@router.get("/models/{model}/drift")
async def drift_page(request: Request, model: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    view = await asyncio.to_thread(drift_view, ui.settings, model)
    figures = {"drift-trend": charts.drift_trend(view)}
    if view.features:
        figures["drift-heatmap"] = charts.drift_heatmap(view)
    return await _page(request, ui, "drift.html", model=model, view=view, figures=_json(figures))


@router.get("/models/{model}/drift/{run_id}/{name}")
async def drift_file(request: Request, model: str, run_id: str, name: str) -> Response:
    ui = _ui(request)
    path = await asyncio.to_thread(report_file, ui.settings, model, run_id, name)
    kind = "application/json" if name.endswith(".json") else "text/html; charset=utf-8"
    return FileResponse(path, media_type=kind)


@router.get("/models/{model}/traffic")
async def traffic_page(request: Request, model: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    params = dict(request.query_params)
    until = _when(params, "until") or datetime.now(UTC)
    since = _when(params, "since")
    window = params.get("window", "1h")
    if since is None:
        if window not in WINDOWS:
            raise InvalidInput(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
        since = until - parse_duration(window)
    if since >= until:
        raise InvalidInput("until: must be after since")
    t = await asyncio.to_thread(read_traffic, ui.settings, model, since, until)
    return await _page(
        request, ui, "traffic.html", model=model, t=t, window=window, windows=WINDOWS,
        figures=_json({f"traffic-{i}": f for i, f in enumerate(charts.traffic(t))}),
    )  # fmt: skip


@router.get("/models/{model}/logs")
async def logs_page(request: Request, model: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    params = dict(request.query_params)
    if not params:  # the last hour unless asked otherwise
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        params = {"since": (now - timedelta(hours=1)).isoformat(), "until": ""}
    w = _window(params, model)
    p = await asyncio.to_thread(logs.preview, ui.settings, w)
    versions = ModelStore(ui.settings.model_store).versions(model)
    query = {k: v for k, v in params.items() if k in ("version", "since", "until") and v}
    return await _page(
        request, ui, "logs.html", model=model, w=w, p=p, versions=versions,
        query="&".join(f"{k}={quote(v)}" for k, v in query.items()),
    )  # fmt: skip


@router.get("/models/{model}/logs/export.{fmt}")
async def logs_download(request: Request, model: str, fmt: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    if fmt not in ("csv", "parquet"):
        raise InvalidInput(f"format: {fmt!r} is not csv or parquet")
    w = _window(dict(request.query_params), model)
    pipe, _ = logs.stream_export(ui.settings, w, f".{fmt}")
    first = await asyncio.to_thread(pipe.get)  # an error before any byte is still a page
    if isinstance(first, BaseException):
        pipe.abandoned.set()
        raise first

    async def body() -> Any:
        try:
            if first is not None:
                yield first
                it = logs.chunks(pipe)
                while (chunk := await asyncio.to_thread(next, it, None)) is not None:
                    yield chunk
        finally:  # the client went away (or the end came): the writer thread stops
            pipe.abandoned.set()

    kind = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
    name = f"{model}{'' if w.version is None else f'-v{w.version}'}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(body(), media_type=kind, headers=headers)


@router.get("/models/{model}/backtest")
async def backtest_page(request: Request, model: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    recent = await asyncio.to_thread(jobs.list_jobs, ui.settings, model)
    versions = ModelStore(ui.settings.model_store).versions(model)
    return await _page(request, ui, "backtest.html", model=model, jobs=recent, versions=versions)


@router.post("/models/{model}/backtest")
async def backtest_start(request: Request, model: str) -> Response:
    ui = _ui(request)
    _model(ui.settings, model)
    form = await _form(request, ui)
    w = _window(form, model)
    candidate = _version(form, "candidate")
    if candidate is None:
        raise InvalidInput("candidate: missing")
    ModelStore(ui.settings.model_store).version_dir(model, candidate)
    job = await asyncio.to_thread(
        jobs.start_backtest, ui.settings, model, candidate, w.since, w.until
    )
    raise _Redirect(f"/ui/backtests/{job}")


@router.get("/backtests/{job_id}")
async def backtest_job(request: Request, job_id: str) -> Response:
    ui = _ui(request)
    job = await asyncio.to_thread(jobs.read_job, ui.settings, job_id)
    return await _page(request, ui, "job.html", model=job["model"], job=job)


# -- static files ----------------------------------------------------------------------------
def _plotly_file(name: str) -> Path:
    dist = importlib.metadata.distribution("plotly")
    if name == "plotly.min.js":
        return Path(str(dist.locate_file("plotly/package_data/plotly.min.js")))
    for f in dist.files or []:
        if f.name.upper().startswith("LICENSE"):
            return Path(str(f.locate()))
    raise NotFound("plotly's licence file is not installed")


_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    _enabled(request)
    if name in ("plotly.min.js", "plotly-LICENSE.txt"):
        path = _plotly_file("plotly.min.js" if name.endswith(".js") else "LICENSE")
        kind = "text/javascript" if name.endswith(".js") else "text/plain; charset=utf-8"
    elif name in _STATIC:
        path, kind = HERE / "static" / name, _STATIC[name]
    else:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "max-age=3600"})


def _json(data: Any) -> str:
    """JSON for a <script type="application/json">: '<' escaped so no text can close the tag."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode().replace("<", "\\u003c")


@router.get("/{rest:path}")
async def not_found(request: Request, rest: str) -> Response:
    """Any other path under /ui: a page too (registered last, so it matches only leftovers)."""
    _enabled(request)
    raise NotFound(f"no console page at /ui/{rest}")
