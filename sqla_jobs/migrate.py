"""Apply sqla_jobs' own Alembic migration history to a database, from Python or the CLI.

The history is the package's ``sqla_jobs/_alembic`` directory. It records its state in
``sqla_jobs_alembic_version``, never in the application's ``alembic_version``, so it lives
beside the application's own history.

    from sqla_jobs import migrate

    migrate.upgrade("postgresql://app@db/app")

Every function here is synchronous: Alembic's environment runs the async driver with
`asyncio.run`, so call them before the application's event loop starts (or from a thread with
`asyncio.to_thread`), never directly from a coroutine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from loguru import logger
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .errors import ConfigurationError
from .settings import DEFAULT_DATABASE_URL as DEFAULT_DATABASE_URL
from .urls import display_url, to_async_url

VERSION_TABLE = "sqla_jobs_alembic_version"
"""The table where sqla_jobs records its applied revisions (not the application's)."""

BRANCH_LABEL = "sqla_jobs"
"""The Alembic branch label of this history's root revision."""

URL_ENV_VAR = "SQLA_JOBS_DATABASE_URL"
"""The environment variable read when no URL is given."""


def script_location() -> Path:
    """Return the directory of the shipped migration history (``sqla_jobs/_alembic``).

    It is part of the package, so a wheel and an editable install have it at the same place.
    """
    location = Path(__file__).resolve().parent / "_alembic"
    if not (location / "env.py").is_file():
        raise ConfigurationError(f"sqla_jobs' migration history is missing: no {location}/env.py")
    return location


def resolve_url(url: str | URL | None = None) -> URL:
    """Return `url`, else ``$SQLA_JOBS_DATABASE_URL``, else the default; with its async driver."""
    return to_async_url(url or os.environ.get(URL_ENV_VAR) or DEFAULT_DATABASE_URL)


def alembic_config(url: str | URL | None = None) -> Config:
    """Return an Alembic `Config` for the shipped history, pointed at `url`.

    With `url` None the environment variable ``SQLA_JOBS_DATABASE_URL`` is used, else a SQLite
    file ``sqla_jobs.db`` in the working directory. The config has no ini file, so running it
    leaves the application's logging configuration alone.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    # configparser interpolates "%"; URL-encoded passwords contain it.
    rendered = resolve_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(url: str | URL | None = None, revision: str = "heads") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    Each revision runs in a transaction where the database supports transactional DDL.
    """
    target = resolve_url(url)
    logger.info("migrating database", url=display_url(target), revision=revision)
    command.upgrade(alembic_config(target), revision)
    logger.info("database migrated", url=display_url(target), revision=revision)


def downgrade(url: str | URL | None = None, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision` (default: drop every sqla_jobs table).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    """
    target = resolve_url(url)
    logger.info("downgrading database", url=display_url(target), revision=revision)
    command.downgrade(alembic_config(target), revision)
    logger.info("database downgraded", url=display_url(target), revision=revision)


def current(url: str | URL | None = None) -> tuple[str, ...]:
    """Return the sqla_jobs revisions applied to the database at `url` (empty if none).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    """
    return asyncio.run(_current_heads(resolve_url(url)))


def head_revisions() -> tuple[str, ...]:
    """Return the newest revision(s) of the shipped history."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


async def _current_heads(url: URL) -> tuple[str, ...]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_heads)
    finally:
        await engine.dispose()


def _read_heads(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()
