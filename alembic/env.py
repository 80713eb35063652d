"""Alembic environment of sqla_jobs' own migration history.

The database comes from, in order: ``config.attributes["connection"]`` (a sync `Connection`
handed over programmatically, as in Alembic's cookbook), the ``sqlalchemy.url`` option, the
``SQLA_JOBS_DATABASE_URL`` environment variable, and finally a SQLite file in the working
directory. URLs are driven through their async driver (asyncpg, aiosqlite), like Alembic's async
template. The version table is ``sqla_jobs_alembic_version``, so this history never touches the
application's own ``alembic_version``.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sqla_jobs.migrate import DEFAULT_DATABASE_URL, URL_ENV_VAR, VERSION_TABLE
from sqla_jobs.models import Base
from sqla_jobs.urls import to_async_url

config = context.config

# Only when run by the `alembic` command with an ini file: a programmatic run must leave the
# host application's logging alone.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _include_name(
    name: str | None,
    type_: str,
    parent_names: object,
) -> bool:
    # The application's tables share this database; autogenerate must not offer to drop them.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def _database_url() -> URL:
    url = (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get(URL_ENV_VAR)
        or DEFAULT_DATABASE_URL
    )
    return to_async_url(url)


def run_migrations_offline() -> None:
    """Emit the migrations as SQL on stdout (``alembic upgrade head --sql``)."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on `connection`, in its own transaction."""
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """Connect through the async driver and run the migrations on that connection."""
    # NullPool: no connection outlives the migration (CREATE DATABASE … TEMPLATE needs that).
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_async_migrations())
    else:
        raise RuntimeError(
            "sqla_jobs migrations cannot run inside a running event loop; call them from a "
            "thread (asyncio.to_thread) or pass a sync connection in "
            'config.attributes["connection"]'
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
