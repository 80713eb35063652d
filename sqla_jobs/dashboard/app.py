"""`create_app`: the dashboard as a Starlette app, to serve alone or mount in another ASGI app."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from sqla_jobs.engine import create_engine

from .actions import cancel_job, delete_dead_letters, retry_dead_letters
from .auth import Auth, AuthMiddleware
from .csrf import CsrfTokens
from .pages import dead_letters_page, job_page, jobs_page, overview_page, workers_page
from .schedules import schedules_page
from .settings import DEFAULT_MAX_BATCH
from .state import Dashboard, make_templates, render


def create_app(
    engine_or_url: AsyncEngine | str | URL,
    *,
    auth: Auth | None,
    read_only: bool = False,
    hide_payloads: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    secret_key: bytes | None = None,
) -> Starlette:
    """Return the dashboard as a Starlette app on `engine_or_url` (an `AsyncEngine` or a URL).

    `auth` is a `BasicAuth` or a `BearerToken` every request must carry, or None when the
    application it is mounted in authenticates its users itself (say so explicitly). With
    `read_only`, no button is shown and every POST is refused; with `hide_payloads`, job
    payloads are never shown. One click retries or deletes at most `max_batch` dead letters.
    `secret_key` signs the CSRF tokens; by default a random key per app (one process).

    Mount it anywhere; its links follow the mount point:

    >>> app = Starlette(routes=[Mount("/jobs", create_app(engine, auth=BasicAuth("ops", pw)))])
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError("max_batch must be an int of at least 1")
    if isinstance(engine_or_url, AsyncEngine):
        engine, owns_engine = engine_or_url, False
    else:
        engine, owns_engine = create_engine(engine_or_url), True
    dashboard = Dashboard(
        engine=engine,
        read_only=read_only,
        hide_payloads=hide_payloads,
        max_batch=max_batch,
        csrf=CsrfTokens(secret_key or secrets.token_bytes(32)),
        templates=make_templates(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan never runs: the engine is made above, not here.
        yield
        if owns_engine:
            await engine.dispose()

    routes = [
        Route("/", overview_page, name="overview"),
        Route("/jobs", jobs_page, name="jobs"),
        Route("/jobs/{job_id}", job_page, name="job"),
        Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"], name="cancel"),
        Route("/dead-letters", dead_letters_page, name="dead_letters"),
        Route("/dead-letters/retry", retry_dead_letters, methods=["POST"], name="retry"),
        Route("/dead-letters/delete", delete_dead_letters, methods=["POST"], name="delete"),
        Route("/workers", workers_page, name="workers"),
        Route("/schedules", schedules_page, name="schedules"),
        *_metrics_routes(engine),
        Mount(
            "/static",
            StaticFiles(packages=[("sqla_jobs.dashboard", "static")]),
            name="static",
        ),
    ]
    middleware = [Middleware(AuthMiddleware, auth=auth)] if auth is not None else []
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.dashboard = dashboard
    return app


def _metrics_routes(engine: AsyncEngine) -> list[Route]:
    # /metrics is served when prometheus-client is installed (sqla_jobs[metrics]); behind the
    # dashboard's own credentials, which Prometheus' scrape config can carry.
    try:
        from sqla_jobs.metrics import asgi_app
    except ImportError:
        return []
    return [Route("/metrics", _Asgi(asgi_app(engine)), name="metrics")]


class _Asgi:
    """An ASGI app as a route's endpoint: Starlette takes a plain function for a handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    heading = {400: "Bad request", 403: "Refused", 404: "Not found"}.get(exc.status_code, "Error")
    context = {"heading": heading, "message": exc.detail}
    return render(request, "error.html", context, status_code=exc.status_code)
