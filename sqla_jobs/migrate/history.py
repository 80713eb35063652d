"""Where sqla_jobs' migration history lives, the Alembic configs that run it, and what it recorded.

Owns the names of the history (version table, branch label, resource, table prefix), the path
of the shipped ``_alembic`` directory, the `Config` objects built for it, and the reading of
the revisions applied to a connection. No I/O of its own beyond the connection it is handed.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, Connection

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.settings import DEFAULT_DATABASE_URL
from sqla_jobs.urls import checked_url, to_async_url

# Alembic (with mako and pygments) is imported by the functions that use it: an application
# that imports sqla_jobs, and every `sqla-jobs` command but `migrate` and `check`, never needs it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

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

JOB_TABLE = "sqla_jobs_job"
APP_VERSION_TABLE = "alembic_version"


def script_location() -> Path:
    """Return the directory of the shipped migration history (``sqla_jobs/_alembic``)."""
    # This file is sqla_jobs/migrate/history.py: the history sits beside the migrate package.
    location = Path(__file__).resolve().parent.parent / "_alembic"
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
    config = history_config()
    # configparser interpolates "%"; URL-encoded passwords contain it.
    rendered = resolve_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revisions() -> tuple[str, ...]:
    """Return the newest revision(s) of the shipped history."""
    return tuple(history_script().get_heads())


def history_config() -> Config:
    """Return a `Config` for the shipped history, with no URL and no ini file."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    return config


def history_script() -> ScriptDirectory:
    """Return the shipped history's revisions."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(history_config())


def connection_config(connection: Connection) -> Config:
    """Return a `Config` that has the history's env.py migrate `connection`."""
    # The history's env.py migrates a connection handed over this way (Alembic's cookbook).
    config = history_config()
    config.attributes["connection"] = connection
    return config


def applied_revisions(heads: tuple[str, ...]) -> set[str]:
    """Return `heads` and every revision of the history below them."""
    script = history_script()
    return {revision.revision for revision in script.iterate_revisions(heads, "base")}


def read_applied(connection: Connection) -> tuple[str, ...]:
    """Return the sqla_jobs heads recorded in either version table (ours first), or ()."""
    from alembic.runtime.migration import MigrationContext

    heads = read_heads(connection)
    if heads:
        return heads
    context = MigrationContext.configure(connection, opts={"version_table": APP_VERSION_TABLE})
    ours = {revision.revision for revision in history_script().walk_revisions()}
    return tuple(head for head in context.get_current_heads() if head in ours)


def read_heads(connection: Connection) -> tuple[str, ...]:
    """Return the heads recorded in ``sqla_jobs_alembic_version`` (empty if none or no table)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_heads()


def schema_problem(applied: Collection[str], *, database: str) -> str | None:
    """Return one sentence saying why a schema at `applied` cannot be used, or None if at head.

    `database` names the database in the sentence (a display URL, never with its password).
    """
    heads = set(head_revisions())
    if set(applied) == heads:
        return None
    # Applied by `sqla_jobs migrate`, or by the application's own Alembic: name both ways.
    how = "run `python -m sqla_jobs migrate` (or `alembic upgrade heads` in your application)"
    if not applied:
        return f"{database} has no sqla_jobs schema: {how}"
    return (
        f"the schema of {database} is at {', '.join(sorted(applied))}, this version of "
        f"sqla_jobs needs {', '.join(sorted(heads))}: {how}"
    )
