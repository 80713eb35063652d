"""Apply sqla_jobs' own Alembic migration history to a database, from Python, the CLI or an app.

The history is the repository's top-level ``alembic/``; the package reaches it as
``sqla_jobs/_alembic`` (a symlink in a checkout, a copy in the wheel), so the resource
``sqla_jobs:_alembic/versions`` names its revisions in a wheel and an editable install alike.
There are three ways to apply it; pick one per database:

- ``python -m sqla_jobs migrate`` or `upgrade`: the history records itself in
  ``sqla_jobs_alembic_version``, beside the application's own ``alembic_version``;
- the application's own Alembic, with ``sqla_jobs:_alembic/versions`` in its
  ``version_locations``: the revisions join its history as the branch ``sqla_jobs``, recorded
  in its ``alembic_version``;
- `create_schema` / `drop_schema` called from the application's own revisions (Oban's way): the
  application pins the version, and the state is again recorded in ``sqla_jobs_alembic_version``,
  so this way and ``sqla_jobs migrate`` work together.

The second way cannot be mixed with the other two: the history's first revision refuses, in one
sentence naming the way that created them, to create tables that exist already.

    from sqla_jobs import migrate

    migrate.upgrade("postgresql://app@db/app")

`upgrade`, `downgrade` and `current` are synchronous: they drive the async driver with
`asyncio.run`, so call them before the application's event loop starts (or from a thread with
`asyncio.to_thread`), never directly from a coroutine.

This package owns the commands (`upgrade`, `downgrade`, `current`, ``sqla_jobs migrate``) and
re-exports the rest: `sqla_jobs.migrate.history` (where the history is, its configs, what a
database recorded), `sqla_jobs.migrate.app` (the application-Alembic integration) and
`sqla_jobs.migrate.connection` (the connection the commands run on, and their errors).
"""

from __future__ import annotations

import io

from loguru import logger
from sqlalchemy.engine import URL

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.errors import MigrationError as MigrationError
from sqla_jobs.settings import DEFAULT_DATABASE_URL as DEFAULT_DATABASE_URL
from sqla_jobs.urls import display_url

from .app import SupportsGetBind as SupportsGetBind
from .app import check_version_locations as check_version_locations
from .app import create_schema as create_schema
from .app import drop_schema as drop_schema
from .app import include_name as include_name
from .app import include_object as include_object
from .app import refuse_existing_schema as refuse_existing_schema
from .connection import run_on
from .history import BRANCH_LABEL as BRANCH_LABEL
from .history import TABLE_PREFIX as TABLE_PREFIX
from .history import URL_ENV_VAR as URL_ENV_VAR
from .history import VERSION_TABLE as VERSION_TABLE
from .history import VERSIONS_RESOURCE as VERSIONS_RESOURCE
from .history import alembic_config as alembic_config
from .history import connection_config
from .history import head_revisions as head_revisions
from .history import read_applied as read_applied
from .history import resolve_url as resolve_url
from .history import schema_problem as schema_problem
from .history import script_location as script_location
from .history import versions_location as versions_location


def upgrade(url: str | URL | None = None, revision: str = "heads") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    All the revisions run in one transaction where the database supports transactional DDL.
    Raises `MigrationError` (one sentence) when the database cannot be reached or migrated, and
    `ConfigurationError` for a URL that cannot be used.
    """
    from alembic import command

    target = resolve_url(url)
    logger.info("migrating database", url=display_url(target), revision=revision)
    run_on(target, lambda connection: command.upgrade(connection_config(connection), revision))
    logger.info("database migrated", url=display_url(target), revision=revision)


def downgrade(url: str | URL | None = None, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision` (default: drop every sqla_jobs table).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    Raises like `upgrade`.
    """
    from alembic import command

    target = resolve_url(url)
    logger.info("downgrading database", url=display_url(target), revision=revision)
    run_on(target, lambda connection: command.downgrade(connection_config(connection), revision))
    logger.info("database downgraded", url=display_url(target), revision=revision)


def current(url: str | URL | None = None) -> tuple[str, ...]:
    """Return the sqla_jobs revisions applied to the database at `url` (empty if none).

    Whichever way applied them: ``sqla_jobs_alembic_version`` records ``sqla_jobs migrate`` and
    `create_schema`; an application's own history records them in its ``alembic_version``.
    Synchronous (see the module docstring).
    """
    return run_on(resolve_url(url), read_applied)


def upgrade_sql(
    url: str | URL | None = None, revision: str = "heads", *, start: str | None = None
) -> str:
    """Return the SQL that upgrades a database from `start` (default: empty) to `revision`.

    Alembic's offline mode: nothing connects, `url` only picks the dialect the SQL is written
    for (``postgresql://`` or ``sqlite://``). For teams that review and apply DDL themselves:
    the script also creates and updates ``sqla_jobs_alembic_version``, so ``sqla_jobs
    migrate`` and the worker's startup check see the result as migrated.

    >>> print(migrate.upgrade_sql("postgresql://"))
    """
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(url)
    buffer = io.StringIO()
    config.output_buffer = buffer
    try:
        command.upgrade(config, f"{start}:{revision}" if start else revision, sql=True)
    except CommandError as exc:
        raise MigrationError(f"cannot write the migration SQL: {exc}") from exc
    return buffer.getvalue()


def run_migrate_command(url: str | URL | None, revision: str = "heads") -> int:
    """Run ``sqla_jobs migrate``: `upgrade`, and report a failure as one log line.

    Return the process exit status: 0 when migrated, 1 when the URL is unusable, the database
    unreachable or the migration refused or failed. The cause stays on the DEBUG log.

        sys.exit(migrate.run_migrate_command(settings.database_url.get_secret_value()))
    """
    try:
        upgrade(url, revision)
    except (ConfigurationError, MigrationError) as exc:
        logger.opt(exception=exc).debug("migration failure detail")
        logger.error("migration failed", error=str(exc))
        return 1
    return 0
