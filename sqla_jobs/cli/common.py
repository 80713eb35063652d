"""What every operator command shares: the database option, one session, one-sentence errors.

The database is resolved as the worker resolves it (``--database-url``, else
``SQLA_JOBS_DATABASE_URL`` or `.env`, else the SQLite default, announced by a warning). Any
failure becomes a `CommandFailed`: one sentence on stderr, exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import NullPool

from sqla_jobs import log
from sqla_jobs.database_errors import DATABASE_ERRORS, summarize_error
from sqla_jobs.engine import create_engine
from sqla_jobs.errors import ConfigurationError, SqlaJobsError
from sqla_jobs.settings import Settings
from sqla_jobs.urls import checked_url, display_url
from sqla_jobs.worker_arguments import WorkerArguments, settings_from, warn_if_default_database

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 10
"""How long a command waits for PostgreSQL to accept its connection before it gives up."""

database_url_option = click.option(
    "--database-url",
    metavar="URL",
    help="The database; overrides SQLA_JOBS_DATABASE_URL and .env (default: sqla_jobs.db).",
)


class CommandFailed(click.ClickException):
    """The command could not do its work; the message says why in one sentence (exit 1)."""

    exit_code = 1


class BadSettings(click.ClickException):
    """The settings or the database URL cannot be used (exit 2, as the worker exits)."""

    exit_code = 2


def load_settings(database_url: str | None) -> Settings:
    """Return the settings with `database_url` overriding them, logging configured."""
    try:
        settings = settings_from(WorkerArguments(database_url=database_url))
    except ConfigurationError as exc:
        raise BadSettings(f"invalid settings: {exc}") from None
    log.configure(settings)
    return settings


def resolve_database(database_url: str | None) -> URL:
    """Return the database URL the command works on; warn if it is the SQLite default."""
    settings = load_settings(database_url)
    try:
        url = checked_url(settings.database_url.get_secret_value())
    except ConfigurationError as exc:
        raise BadSettings(f"invalid settings: {exc}") from None
    warn_if_default_database(url, database_url)
    return url


def with_session(url: URL, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Return `work` run on a session of its own on `url`; errors become `CommandFailed`."""
    _refuse_missing_sqlite_file(url)
    try:
        return asyncio.run(_with_session(url, work))
    except DATABASE_ERRORS as exc:
        raise CommandFailed(describe_database_error(url, exc)) from None
    except (ValueError, SqlaJobsError) as exc:
        raise CommandFailed(str(exc)) from None


async def _with_session(url: URL, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    options: dict[str, Any] = {"poolclass": NullPool}
    if url.get_backend_name() == "postgresql":
        options["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, **options)
    try:
        # expire_on_commit=False: what a batch committed stays readable for the report.
        async with AsyncSession(engine, expire_on_commit=False) as session:
            return await work(session)
    finally:
        await engine.dispose()


def describe_database_error(url: URL, exc: BaseException) -> str:
    """Return one sentence for a database error, naming the database (never its password)."""
    reason = summarize_error(str(exc)) or type(exc).__name__
    sentence = f"cannot use the database {display_url(url)}: {reason}"
    if "sqla_jobs_" in reason and ("no such table" in reason or "does not exist" in reason):
        sentence += " (run `sqla-jobs migrate` first)"
    return sentence


def _refuse_missing_sqlite_file(url: URL) -> None:
    # SQLite would create an empty file (and then find no table): say what is wrong instead.
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if not database.startswith("file:") and not Path(database).exists():
        raise CommandFailed(
            f"the SQLite database {database} does not exist (run `sqla-jobs migrate` to create "
            "it, or pass --database-url)"
        )
