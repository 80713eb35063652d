"""``sqla-jobs dashboard``: serve the web dashboard (extra ``sqla_jobs[dashboard]``)."""

from __future__ import annotations

import click

from sqla_jobs import admin
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.worker_arguments import import_option

from .common import (
    BadSettings,
    CommandFailed,
    database_url_option,
    resolve_database,
    with_session,
)


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="The port to listen on.")
@database_url_option
@import_option("Import MODULE so its periodic schedules are listed (repeatable).")
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="Show everything, change nothing (SQLA_JOBS_DASHBOARD_READ_ONLY).",
)
@click.option(
    "--hide-payloads",
    is_flag=True,
    default=None,
    help="Never show job payloads (SQLA_JOBS_DASHBOARD_HIDE_PAYLOADS).",
)
@click.option("--root-path", default="", help="The path a reverse proxy serves it under.")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve without credentials; only allowed on a loopback address.",
)
def dashboard_command(
    host: str,
    port: int,
    database_url: str | None,
    imports: tuple[str, ...],
    read_only: bool | None,
    hide_payloads: bool | None,
    root_path: str,
    insecure_no_auth: bool,
) -> None:
    """Serve the web dashboard until interrupted.

    Credentials come from SQLA_JOBS_DASHBOARD_USER and SQLA_JOBS_DASHBOARD_PASSWORD (basic
    auth) or SQLA_JOBS_DASHBOARD_TOKEN; without them it refuses to start, unless bound to a
    loopback address with --insecure-no-auth.
    """
    try:
        from sqla_jobs.dashboard.command import ServeOptions, prepare, serve
    except ImportError as exc:
        raise CommandFailed(
            f"the dashboard needs its extra: pip install 'sqla_jobs[dashboard]' ({exc})"
        ) from None
    options = ServeOptions(
        host=host,
        port=port,
        imports=imports,
        read_only=read_only,
        hide_payloads=hide_payloads,
        insecure_no_auth=insecure_no_auth,
        root_path=root_path,
    )
    url = resolve_database(database_url)
    try:
        app = prepare(options, url)
    except ConfigurationError as exc:
        raise BadSettings(str(exc)) from None
    # A missing database or schema is said now, in one sentence, not on every page later.
    with_session(url, admin.workers)
    serve(app, options)
