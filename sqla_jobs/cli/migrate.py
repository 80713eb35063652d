"""``sqla-jobs migrate``: apply, revert, inspect or print sqla_jobs' schema migrations.

Bare ``sqla-jobs migrate`` upgrades to the newest revision, as it always did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from loguru import logger
from sqlalchemy.engine import URL

from sqla_jobs import migrate
from sqla_jobs.errors import ConfigurationError, MigrationError

from .common import CommandFailed, database_url_option, load_settings, resolve_database

T = TypeVar("T")

DIALECT_URLS = {"postgresql": "postgresql://", "sqlite": "sqlite://"}


@click.group(
    "migrate", invoke_without_command=True, short_help="Apply or inspect the schema migrations."
)
@click.option(
    "--revision",
    default="heads",
    show_default=True,
    help="Target of a bare `migrate` (an upgrade).",
)
@database_url_option
@click.pass_context
def migrate_group(ctx: click.Context, revision: str, database_url: str | None) -> None:
    """Apply sqla_jobs' migrations to the database (bare: upgrade to the newest)."""
    ctx.obj = database_url
    if ctx.invoked_subcommand is None:
        _upgrade(database_url, revision)


@migrate_group.command("upgrade")
@click.argument("revision", default="heads")
@database_url_option
@click.pass_obj
def upgrade_command(group_url: str | None, revision: str, database_url: str | None) -> None:
    """Upgrade the schema to REVISION (default: heads, the newest)."""
    _upgrade(database_url or group_url, revision)


@migrate_group.command("downgrade")
@click.argument("revision")
@database_url_option
@click.pass_obj
def downgrade_command(group_url: str | None, revision: str, database_url: str | None) -> None:
    """Downgrade the schema to REVISION (`base` drops every sqla_jobs table)."""
    url = resolve_database(database_url or group_url)
    _translated(lambda: migrate.downgrade(url, revision))


@migrate_group.command("current")
@database_url_option
@click.pass_obj
def current_command(group_url: str | None, database_url: str | None) -> None:
    """Print the revision(s) the database is at, and whether that is the newest."""
    url = resolve_database(database_url or group_url)
    applied = _translated(lambda: migrate.current(url))
    heads = migrate.head_revisions()
    for revision in applied:
        click.echo(f"{revision}{' (head)' if revision in heads else ''}")
    if not applied:
        click.echo("no sqla_jobs schema")


@migrate_group.command("sql")
@click.argument("revision", default="heads")
@click.option(
    "--from", "start", metavar="REVISION", help="Start from this revision (default: empty)."
)
@click.option(
    "--dialect",
    type=click.Choice(sorted(DIALECT_URLS)),
    help="Write SQL for this database (default: that of the database URL).",
)
@database_url_option
@click.pass_obj
def sql_command(
    group_url: str | None,
    revision: str,
    start: str | None,
    dialect: str | None,
    database_url: str | None,
) -> None:
    """Print the DDL that upgrades to REVISION, without connecting (to apply it yourself)."""
    if dialect is not None:
        load_settings(None)
        url: str | URL = DIALECT_URLS[dialect]
    else:
        url = resolve_database(database_url or group_url)
    script = _translated(lambda: migrate.upgrade_sql(url, revision, start=start))
    click.echo(script, nl=False)


def _upgrade(database_url: str | None, revision: str) -> None:
    url = resolve_database(database_url)
    _translated(lambda: migrate.upgrade(url, revision))


def _translated(work: Callable[[], T]) -> T:
    try:
        return work()
    except (ConfigurationError, MigrationError) as exc:
        logger.opt(exception=exc).debug("migration failure detail")
        logger.error("migration failed", error=str(exc))
        raise CommandFailed(str(exc)) from None
