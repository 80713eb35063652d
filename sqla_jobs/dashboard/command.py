"""``sqla-jobs dashboard``: serve the dashboard with uvicorn, refusing to serve it unprotected.

The CLI parses the flags and calls `serve`; everything is checked before a socket is opened.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import uvicorn

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.urls import checked_url

from .app import create_app
from .auth import Auth
from .settings import DashboardSettings


@dataclass(frozen=True)
class ServeOptions:
    """What ``sqla-jobs dashboard`` was asked to do."""

    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
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


def serve(options: ServeOptions, settings: DashboardSettings) -> None:
    """Check `options` and `settings`, then serve the dashboard until interrupted.

    >>> serve(ServeOptions(database_url="postgresql://app@db/app"), DashboardSettings())
    """
    if not 0 < options.port < 65536:
        raise ConfigurationError(f"--port must be between 1 and 65535, not {options.port}")
    auth = checked_auth(settings, host=options.host, insecure_no_auth=options.insecure_no_auth)
    app = create_app(
        checked_url(options.database_url),
        auth=auth,
        read_only=settings.read_only,
        hide_payloads=settings.hide_payloads,
        max_batch=settings.max_batch,
    )
    uvicorn.run(
        app,
        host=options.host.strip("[]"),
        port=options.port,
        root_path=options.root_path,
        proxy_headers=False,
        server_header=False,
    )
