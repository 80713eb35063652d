"""``sqla-jobs periodic list``: each periodic schedule and its next run times."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.periodic_listing import format_schedules, registered_schedules
from sqla_jobs.worker_arguments import import_modules, import_option

from .common import BadSettings


@click.group("periodic")
def periodic_group() -> None:
    """Inspect periodic schedules."""


@periodic_group.command("list")
@import_option("Import MODULE so its schedules register (repeatable).")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Run times shown per schedule.",
)
def list_command(imports: tuple[str, ...], count: int) -> None:
    """Show each schedule and its next run times."""
    try:
        import_modules(imports)
    except ConfigurationError as exc:
        raise BadSettings(str(exc)) from None
    schedules = list(registered_schedules().values())
    click.echo(format_schedules(schedules, now=datetime.now(UTC), count=count), nl=False)
