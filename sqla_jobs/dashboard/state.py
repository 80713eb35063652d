"""What every dashboard request needs: the engine, the options, the templates, the CSRF tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from .csrf import FIELD_NAME, CsrfTokens

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class Dashboard:
    """One dashboard app's engine, options and helpers (``request.app.state.dashboard``)."""

    engine: AsyncEngine
    read_only: bool
    hide_payloads: bool
    max_batch: int
    csrf: CsrfTokens
    templates: Jinja2Templates

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Open a session for one request; the caller commits what it changes."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session:
            yield session


def dashboard_of(request: Request) -> Dashboard:
    """Return the `Dashboard` of the app serving `request`."""
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def root_of(request: Request) -> str:
    """Return the path the dashboard is mounted at ("" at the root), for its links."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> Response:
    """Render `template` with `context` and what every page shows (links, CSRF token, mode)."""
    dashboard = dashboard_of(request)
    token = dashboard.csrf.token_for(request)
    page = {
        **context,
        "root": root_of(request),
        "csrf_field": FIELD_NAME,
        "csrf_token": token,
        "read_only": dashboard.read_only,
        "hide_payloads": dashboard.hide_payloads,
        "max_batch": dashboard.max_batch,
    }
    response = dashboard.templates.TemplateResponse(
        request, template, page, status_code=status_code
    )
    # Pages show live data and the CSRF token: nothing here is for a shared cache.
    response.headers["Cache-Control"] = "no-store"
    # No framing (clickjacking the buttons), no script or style from anywhere but here.
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    dashboard.csrf.set_cookie(request, response, token)
    return response


def make_templates() -> Jinja2Templates:
    """Return the dashboard's templates, autoescaped, with its filters."""
    environment = Environment(
        loader=PackageLoader("sqla_jobs.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = format_instant
    environment.filters["age"] = format_age
    return Jinja2Templates(env=environment)


def format_instant(instant: datetime | None) -> str:
    """Show `instant` in UTC to the second: ``2026-11-30 01:02:03``; "—" for None."""
    if instant is None:
        return "—"
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_age(age: timedelta | float | None) -> str:
    """Show a duration (or seconds) briefly: ``45s``, ``3m 12s``, ``2h 5m``, ``3d 4h``."""
    if age is None:
        return "—"
    seconds = int(age.total_seconds() if isinstance(age, timedelta) else age)
    if seconds < 0:
        return f"in {format_age(-seconds)}"
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
