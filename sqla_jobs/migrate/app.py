"""sqla_jobs' schema inside an application's own Alembic: filters, checks, and the Oban way.

Owns what an application's ``env.py`` and revisions call: `include_name` and `include_object`
keep sqla_jobs' tables out of autogenerate, `check_version_locations` catches a history that
silently lost sqla_jobs' revisions, `create_schema` and `drop_schema` apply sqla_jobs' history
from the application's own revisions, and `refuse_existing_schema` (called by the history's
first revision) refuses to create tables that another way made already.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger
from sqlalchemy import Column, Constraint, Index, MetaData, Table, inspect
from sqlalchemy.engine import Connection

from .history import (
    BRANCH_LABEL,
    JOB_TABLE,
    TABLE_PREFIX,
    VERSION_TABLE,
    VERSIONS_RESOURCE,
    applied_revisions,
    connection_config,
    read_applied,
    read_heads,
)

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.sql.schema import SchemaItem


class SupportsGetBind(Protocol):
    """Alembic's ``op`` (module or `Operations`): anything that hands out its `Connection`."""

    def get_bind(self) -> Connection:
        """Return the connection the migration runs on."""
        ...


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
    from alembic.util import CommandError, coerce_resource_to_filename

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
            migrate.create_schema(op, version="d1e2f3a4b5c6")
    """
    from alembic import command

    connection = _bound_connection(op)
    heads = read_heads(connection)
    if version in applied_revisions(heads):
        logger.info("sqla_jobs schema already there", version=version, current=heads)
        return
    logger.info("creating sqla_jobs schema", version=version, current=heads)
    with _outer_migration_kept():
        command.upgrade(connection_config(connection), version)


def drop_schema(op: SupportsGetBind | Connection, *, version: str = "base") -> None:
    """Downgrade sqla_jobs' schema to `version`; the default drops it, version table included.

    The counterpart of `create_schema` in the application's ``downgrade()``: pass the version
    the previous revision created, or nothing in the revision that created the schema first.

        def downgrade() -> None:
            migrate.drop_schema(op)
    """
    from alembic import command

    connection = _bound_connection(op)
    heads = read_heads(connection)
    if heads and (version == "base" or version in applied_revisions(heads) - set(heads)):
        logger.info("dropping sqla_jobs schema", version=version, current=heads)
        with _outer_migration_kept():
            command.downgrade(connection_config(connection), version)
    if version == "base" and inspect(connection).has_table(VERSION_TABLE):
        Table(VERSION_TABLE, MetaData()).drop(connection)


def refuse_existing_schema(context: MigrationContext) -> None:
    """Raise `CommandError` if sqla_jobs' tables exist already, naming the way that made them.

    Called by the history's first revision: two histories that both think they own the tables
    would otherwise fail half-way with a duplicate table error.
    """
    from alembic.util import CommandError

    if context.as_sql:
        return
    connection = context.connection
    assert connection is not None, "online migrations have a connection"
    inspector = inspect(connection)
    if not inspector.has_table(JOB_TABLE):
        return
    if context.version_table != VERSION_TABLE and read_heads(connection):
        raise CommandError(
            "sqla_jobs' tables already exist, created by `python -m sqla_jobs migrate` or "
            f"migrate.create_schema() and recorded in {VERSION_TABLE}, so this Alembic history "
            "must not create them again: keep that way (then remove sqla_jobs from "
            "version_locations), or follow the README's steps to hand the tables over"
        )
    if context.version_table == VERSION_TABLE and read_applied(connection):
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


def _bound_connection(op: SupportsGetBind | Connection) -> Connection:
    if isinstance(op, Connection):
        return op
    connection = op.get_bind()
    if not isinstance(connection, Connection):
        from alembic.util import CommandError

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
