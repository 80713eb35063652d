"""``sqla-jobs dashboard``: serve the dashboard with uvicorn, refusing to serve it unprotected.

The CLI parses the flags, resolves the database and calls `serve`.
"""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from sqlalchemy.engine import URL
from starlette.applications import Starlette

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.worker_arguments import import_modules
from sqla_jobs.worker_options import describe_errors

from .app import create_app
from .auth import Auth
from .settings import DashboardSettings


@dataclass(frozen=True)
class ServeOptions:
    """What ``sqla-jobs dashboard`` was asked to do; None: as the settings say."""

    host: str = "127.0.0.1"
    port: int = 8080
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


def prepare(options: ServeOptions, url: URL) -> Starlette:
    """Check `options` and the ``SQLA_JOBS_DASHBOARD_*`` settings; return the app to serve.

    `ConfigurationError` says, in one sentence, what is wrong; no socket is opened yet.

    >>> serve(prepare(ServeOptions(host="127.0.0.1", imports=("myapp.tasks",)), url), options)
    """
    if not 0 < options.port < 65536:
        raise ConfigurationError(f"--port must be between 1 and 65535, not {options.port}")
    overrides: dict[str, Any] = {
        "read_only": options.read_only,
        "hide_payloads": options.hide_payloads,
    }
    try:
        settings = DashboardSettings(
            **{key: value for key, value in overrides.items() if value is not None}
        )
    except ValidationError as exc:
        raise ConfigurationError(f"invalid dashboard settings: {describe_errors(exc)}") from None
    auth = checked_auth(settings, host=options.host, insecure_no_auth=options.insecure_no_auth)
    import_modules(options.imports)
    return create_app(
        url,
        auth=auth,
        read_only=settings.read_only,
        hide_payloads=settings.hide_payloads,
        max_batch=settings.max_batch,
    )


def serve(app: Starlette, options: ServeOptions) -> None:
    """Serve `app` with uvicorn on `options`' address until stopped (Ctrl-C, SIGTERM)."""
    config = uvicorn.Config(
        app,
        host=options.host.strip("[]"),
        port=options.port,
        root_path=options.root_path,
        proxy_headers=False,
        server_header=False,
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop signal ends the command with status 0.

    uvicorn raises the signal again once it has shut down, so the process would die of it;
    like the worker's, a stopped dashboard has done what it was asked and exits cleanly.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
        else:
            self.should_exit = True
