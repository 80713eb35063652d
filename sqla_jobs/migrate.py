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
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError, coerce_resource_to_filename
from loguru import logger
from sqlalchemy import Column, Constraint, Index, MetaData, Table, inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .errors import ConfigurationError
from .errors import MigrationError as MigrationError
from .settings import DEFAULT_DATABASE_URL as DEFAULT_DATABASE_URL
from .urls import checked_url, display_url, to_async_url

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from sqlalchemy.sql.schema import SchemaItem

VERSION_TABLE = "sqla_jobs_alembic_version"
"""The table where sqla_jobs records its applied revisions (not the application's)."""

BRANCH_LABEL = "sqla_jobs"
"""The Alembic branch label of this history's root revision."""

URL_ENV_VAR = "SQLA_JOBS_DATABASE_URL"
"""The environment variable read when no URL is given."""

VERSIONS_RESOURCE = "sqla_jobs:_alembic/versions"
"""This history's revisions as a package resource, for an application's ``version_locations``."""

TABLE_PREFIX = "sqla_jobs_"
"""Every table sqla_jobs creates, its version table included, starts with this."""

_JOB_TABLE = "sqla_jobs_job"
_APP_VERSION_TABLE = "alembic_version"

_T = TypeVar("_T")


class SupportsGetBind(Protocol):
    """Alembic's ``op`` (module or `Operations`): anything that hands out its `Connection`."""

    def get_bind(self) -> Connection:
        """Return the connection the migration runs on."""
        ...


def script_location() -> Path:
    """Return the directory of the shipped migration history (``sqla_jobs/_alembic``)."""
    location = Path(__file__).resolve().parent / "_alembic"
    if not (location / "env.py").is_file():
        raise ConfigurationError(
            f"sqla_jobs' migration history is missing: {location} has no env.py"
        )
    return location


def versions_location() -> str:
    """Return the directory of this history's revisions, as a path string.

    The same directory as the resource `VERSIONS_RESOURCE`, for code that builds an Alembic
    `Config` itself:

        config.set_main_option("version_locations", migrate.versions_location())
    """
    return str(script_location() / "versions")


def resolve_url(url: str | URL | None = None) -> URL:
    """Return `url`, else ``$SQLA_JOBS_DATABASE_URL``, else the default; with its async driver.

    A URL that cannot be parsed, or names a database sqla_jobs does not run on, raises
    `ConfigurationError`.
    """
    return to_async_url(checked_url(url or os.environ.get(URL_ENV_VAR) or DEFAULT_DATABASE_URL))


def alembic_config(url: str | URL | None = None) -> Config:
    """Return an Alembic `Config` for the shipped history, pointed at `url`.

    With `url` None the environment variable ``SQLA_JOBS_DATABASE_URL`` is used, else a SQLite
    file ``sqla_jobs.db`` in the working directory. The config has no ini file, so running it
    leaves the application's logging configuration alone.
    """
    config = _history_config()
    # configparser interpolates "%"; URL-encoded passwords contain it.
    rendered = resolve_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(url: str | URL | None = None, revision: str = "heads") -> None:
    """Upgrade the database at `url` to `revision` (default: the newest).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    All the revisions run in one transaction where the database supports transactional DDL.
    Raises `MigrationError` (one sentence) when the database cannot be reached or migrated, and
    `ConfigurationError` for a URL that cannot be used.
    """
    target = resolve_url(url)
    logger.info("migrating database", url=display_url(target), revision=revision)
    _run_on(target, lambda connection: command.upgrade(_connection_config(connection), revision))
    logger.info("database migrated", url=display_url(target), revision=revision)


def downgrade(url: str | URL | None = None, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision` (default: drop every sqla_jobs table).

    Synchronous, and not to be called inside a running event loop (see the module docstring).
    Raises like `upgrade`.
    """
    target = resolve_url(url)
    logger.info("downgrading database", url=display_url(target), revision=revision)
    _run_on(target, lambda connection: command.downgrade(_connection_config(connection), revision))
    logger.info("database downgraded", url=display_url(target), revision=revision)


def current(url: str | URL | None = None) -> tuple[str, ...]:
    """Return the sqla_jobs revisions applied to the database at `url` (empty if none).

    Whichever way applied them: ``sqla_jobs_alembic_version`` records ``sqla_jobs migrate`` and
    `create_schema`; an application's own history records them in its ``alembic_version``.
    Synchronous (see the module docstring).
    """
    return _run_on(resolve_url(url), _read_applied)


def head_revisions() -> tuple[str, ...]:
    """Return the newest revision(s) of the shipped history."""
    return tuple(ScriptDirectory.from_config(_history_config()).get_heads())


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


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Keep sqla_jobs' tables out of an application's autogenerate (``include_name=``).

    Pass it with `include_object` to the application's ``context.configure()``, so
    ``alembic revision --autogenerate`` never proposes to create, alter or drop anything of
    sqla_jobs', whether its revisions are in the application's history or not:

        context.configure(connection=connection, target_metadata=target_metadata,
                          include_name=migrate.include_name,
                          include_object=migrate.include_object)
    """
    if type_ == "table":
        return not _is_ours(name)
    return not _is_ours(parent_names.get("table_name"))


def include_object(
    object_: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Keep sqla_jobs' tables, columns, indexes and constraints out of autogenerate.

    The counterpart of `include_name` for the models' side (``include_object=``), needed once
    ``sqla_jobs.models.Base.metadata`` is part of the application's ``target_metadata``.
    """
    if isinstance(object_, Table):
        return not _is_ours(object_.name)
    if isinstance(object_, Column | Index | Constraint):
        table = object_.table
        return not (isinstance(table, Table) and _is_ours(table.name))
    return True


def check_version_locations(script: ScriptDirectory) -> None:
    """Raise `CommandError` unless the application's history includes sqla_jobs' revisions.

    Alembic silently skips a ``version_locations`` entry that does not exist, such as
    ``sqla_jobs:_alembic/versions`` cut in two at its colon by ``path_separator = os``. Call this
    in the application's ``env.py`` to hear of it at once:

        migrate.check_version_locations(context.script)
    """
    for revision in script.walk_revisions():
        if BRANCH_LABEL in revision.branch_labels:
            return
    missing = [
        location
        for location in script.version_locations or ()
        if not coerce_resource_to_filename(location).exists()
    ]
    # CommandError: the alembic command line reports it as one line, without a traceback.
    raise CommandError(
        f"this Alembic history does not include sqla_jobs' revisions: add {VERSIONS_RESOURCE} "
        "to version_locations, one location per line with path_separator = newline"
        + (f" (these locations do not exist: {', '.join(missing)})" if missing else "")
    )


def create_schema(op: SupportsGetBind | Connection, *, version: str) -> None:
    """Create sqla_jobs' schema at `version`, or upgrade it to `version`, inside a migration.

    Call it from one of the application's own revisions, with a pinned revision id of sqla_jobs'
    history (``sqla_jobs.migrate.head_revisions()`` names the newest). The tables are created on
    the revision's connection, in its transaction, and the version is recorded in
    ``sqla_jobs_alembic_version``. Nothing happens if the schema is at `version` or newer
    already. After upgrading sqla_jobs, a later revision of the application calls it again with
    the newer version.

        def upgrade() -> None:
            migrate.create_schema(op, version="c0d1e2f3a4b5")
    """
    connection = _bound_connection(op)
    heads = _read_heads(connection)
    if version in _applied_revisions(heads):
        logger.info("sqla_jobs schema already there", version=version, current=heads)
        return
    logger.info("creating sqla_jobs schema", version=version, current=heads)
    with _outer_migration_kept():
        command.upgrade(_connection_config(connection), version)


def drop_schema(op: SupportsGetBind | Connection, *, version: str = "base") -> None:
    """Downgrade sqla_jobs' schema to `version`; the default drops it, version table included.

    The counterpart of `create_schema` in the application's ``downgrade()``: pass the version
    the previous revision created, or nothing in the revision that created the schema first.

        def downgrade() -> None:
            migrate.drop_schema(op)
    """
    connection = _bound_connection(op)
    heads = _read_heads(connection)
    if heads and (version == "base" or version in _applied_revisions(heads) - set(heads)):
        logger.info("dropping sqla_jobs schema", version=version, current=heads)
        with _outer_migration_kept():
            command.downgrade(_connection_config(connection), version)
    if version == "base" and inspect(connection).has_table(VERSION_TABLE):
        Table(VERSION_TABLE, MetaData()).drop(connection)


def refuse_existing_schema(context: MigrationContext) -> None:
    """Raise `CommandError` if sqla_jobs' tables exist already, naming the way that made them.

    Called by the history's first revision: two histories that both think they own the tables
    would otherwise fail half-way with a duplicate table error.
    """
    if context.as_sql:
        return
    connection = context.connection
    assert connection is not None, "online migrations have a connection"
    inspector = inspect(connection)
    if not inspector.has_table(_JOB_TABLE):
        return
    if context.version_table != VERSION_TABLE and _read_heads(connection):
        raise CommandError(
            "sqla_jobs' tables already exist, created by `python -m sqla_jobs migrate` or "
            f"migrate.create_schema() and recorded in {VERSION_TABLE}, so this Alembic history "
            "must not create them again: keep that way (then remove sqla_jobs from "
            "version_locations), or follow the README's steps to hand the tables over"
        )
    if context.version_table == VERSION_TABLE and _read_applied(connection):
        raise CommandError(
            "sqla_jobs' tables already exist, created by your application's own Alembic history "
            f"(its alembic_version records them) rather than recorded in {VERSION_TABLE}: "
            "migrate them there (`alembic upgrade heads`), not with `python -m sqla_jobs migrate` "
            "or migrate.create_schema()"
        )
    raise CommandError(
        f"sqla_jobs' tables already exist but {context.version_table} does not record them, so "
        "they were made another way (another Alembic history, or metadata.create_all()): keep "
        "migrating them that way, or drop them before this history creates them"
    )


def _is_ours(table_name: str | None) -> bool:
    return table_name is not None and table_name.startswith(TABLE_PREFIX)


def _history_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    return config


def _history_script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_history_config())


def _connection_config(connection: Connection) -> Config:
    # The history's env.py migrates a connection handed over this way (Alembic's cookbook).
    config = _history_config()
    config.attributes["connection"] = connection
    return config


def _applied_revisions(heads: tuple[str, ...]) -> set[str]:
    script = _history_script()
    return {revision.revision for revision in script.iterate_revisions(heads, "base")}


def _read_applied(connection: Connection) -> tuple[str, ...]:
    heads = _read_heads(connection)
    if heads:
        return heads
    context = MigrationContext.configure(connection, opts={"version_table": _APP_VERSION_TABLE})
    ours = {revision.revision for revision in _history_script().walk_revisions()}
    return tuple(head for head in context.get_current_heads() if head in ours)


def _read_heads(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


def _bound_connection(op: SupportsGetBind | Connection) -> Connection:
    if isinstance(op, Connection):
        return op
    connection = op.get_bind()
    if not isinstance(connection, Connection):
        raise CommandError(
            "migrate.create_schema() and drop_schema() need a database connection, so they "
            "cannot run in offline mode (alembic --sql)"
        )
    return connection


@contextmanager
def _outer_migration_kept() -> Iterator[None]:
    # Alembic's `op` and `context` are module-level proxies, not a stack: the nested command
    # installs its own and, at its end, removes them, leaving the application's revision (still
    # running) with an `op` that has no attributes. Reinstall the outer ones.
    import alembic.context
    import alembic.op

    outer: list[Any] = [getattr(module, "_proxy", None) for module in (alembic.op, alembic.context)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


def _run_on(url: URL, work: Callable[[Connection], _T]) -> _T:
    return asyncio.run(_run_async(url, work))


async def _run_async(url: URL, work: Callable[[Connection], _T]) -> _T:
    shown = display_url(url)
    try:
        engine = create_async_engine(url, poolclass=NullPool)
    except (ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"cannot use the database URL {shown}: {exc}") from exc
    _check_sqlite_directory(url)
    try:
        try:
            connection = await engine.connect()
        except (SQLAlchemyError, OSError) as exc:
            raise MigrationError(f"cannot connect to {shown}: {_reason(exc)}") from exc
        try:
            return await connection.run_sync(work)
        except CommandError as exc:
            raise MigrationError(f"cannot migrate {shown}: {exc}") from exc
        except SQLAlchemyError as exc:
            raise MigrationError(f"migrating {shown} failed: {_reason(exc)}") from exc
        finally:
            await connection.close()
    finally:
        await engine.dispose()


def _check_sqlite_directory(url: URL) -> None:
    # SQLite creates a missing file but not its directory; aiosqlite's failed connect also
    # leaves a thread reporting to the closed event loop, so say it before connecting.
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if database.startswith("file:"):
        return
    directory = Path(database).parent
    if not directory.is_dir():
        raise MigrationError(
            f"cannot connect to {display_url(url)}: the directory {directory} does not exist"
        )


def _reason(exc: BaseException) -> str:
    """Return the first line of the driver's message, without SQLAlchemy's decorations."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
