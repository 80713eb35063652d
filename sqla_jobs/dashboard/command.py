"""``sqla-jobs dashboard``: serve the dashboard with uvicorn, refusing to serve it unprotected.

The CLI parses the flags and calls `run`; everything is checked before a socket is opened.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette

from sqla_jobs import log
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import Settings
from sqla_jobs.urls import checked_url
from sqla_jobs.worker.command import import_modules
from sqla_jobs.worker_options import describe_errors

from .app import create_app
from .auth import Auth
from .settings import DashboardSettings


@dataclass(frozen=True)
class ServeOptions:
    """What ``sqla-jobs dashboard`` was asked to do; None: as the settings say."""

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    imports: tuple[str, ...] = ()
    read_only: bool | None = None
    hide_payloads: bool | None = None
    insecure_no_auth: bool = False
    root_path: str = ""


def is_loopback(host: str) -> bool:
    """Tell whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_auth(settings: DashboardSettings, *, host: str, insecure_no_auth: bool) -> Auth | None:
    """Return the credentials to require; `ConfigurationError` when serving would be unsafe.

    Without credentials the dashboard only starts bound to loopback, and only when asked to
    with ``--insecure-no-auth``: it can retry and delete jobs, so it is never open by accident.
    """
    auth = settings.auth()
    if auth is not None:
        if insecure_no_auth:
            raise ConfigurationError(
                "--insecure-no-auth was given but credentials are set; drop one of them"
            )
        return auth
    if not insecure_no_auth:
        raise ConfigurationError(
            "the dashboard needs credentials: set SQLA_JOBS_DASHBOARD_USER and "
            "SQLA_JOBS_DASHBOARD_PASSWORD, or SQLA_JOBS_DASHBOARD_TOKEN "
            "(or, on 127.0.0.1 only, pass --insecure-no-auth)"
        )
    if not is_loopback(host):
        raise ConfigurationError(
            f"--insecure-no-auth is only allowed on a loopback address (127.0.0.1, ::1), "
            f"not on {host}"
        )
    return None


def run(options: ServeOptions) -> int:
    """Serve the dashboard until interrupted; return the exit code (2: bad settings or flags).

    Flags override the settings (``SQLA_JOBS_DATABASE_URL``, ``SQLA_JOBS_DASHBOARD_*``).
    Everything is checked before a socket is opened.

    >>> run(ServeOptions(host="127.0.0.1", port=8080, imports=("myapp.tasks",)))
    """
    try:
        settings, app = _checked_app(options)
    except ConfigurationError as exc:
        print(f"sqla-jobs dashboard: {exc}", file=sys.stderr)
        return 2
    log.configure(settings)
    uvicorn.run(
        app,
        host=options.host.strip("[]"),
        port=options.port,
        root_path=options.root_path,
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level.lower() if settings.log_level != "SUCCESS" else "info",
    )
    return 0


def _checked_app(options: ServeOptions) -> tuple[Settings, Starlette]:
    if not 0 < options.port < 65536:
        raise ConfigurationError(f"--port must be between 1 and 65535, not {options.port}")
    overrides: dict[str, Any] = {
        "read_only": options.read_only,
        "hide_payloads": options.hide_payloads,
    }
    try:
        url_flag: dict[str, Any] = {"database_url": options.database_url}
        settings = Settings(**(url_flag if options.database_url else {}))
        dashboard = DashboardSettings(
            **{key: value for key, value in overrides.items() if value is not None}
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {describe_errors(exc)}") from None
    auth = checked_auth(dashboard, host=options.host, insecure_no_auth=options.insecure_no_auth)
    import_modules(options.imports)
    app = create_app(
        checked_url(settings.database_url.get_secret_value()),
        auth=auth,
        read_only=dashboard.read_only,
        hide_payloads=dashboard.hide_payloads,
        max_batch=dashboard.max_batch,
    )
    return settings, app
