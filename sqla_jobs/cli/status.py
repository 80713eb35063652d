"""``sqla-jobs stats`` and ``check``: the queue at a glance, and a health probe."""

from __future__ import annotations

from datetime import timedelta

import click
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs import admin
from sqla_jobs.admin import HealthReport, QueueStats, WorkerInfo

from .common import database_url_option, resolve_database, with_session
from .output import DURATION, format_age, format_table, to_json

heartbeat_timeout_option = click.option(
    "--heartbeat-timeout",
    type=DURATION,
    default="30s",
    show_default=True,
    help="A worker silent this long counts as dead (the workers' heartbeat_timeout).",
)


@click.command("stats", short_help="Show jobs per queue and state, and the workers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@heartbeat_timeout_option
@database_url_option
def stats_command(as_json: bool, heartbeat_timeout: timedelta, database_url: str | None) -> None:
    """Show each queue's jobs by state, its oldest due job's age, and the workers."""

    async def read(session: AsyncSession) -> tuple[list[QueueStats], list[WorkerInfo]]:
        queues = await admin.queue_stats(session)
        return queues, await admin.workers(session, heartbeat_timeout=heartbeat_timeout)

    queues, registered = with_session(resolve_database(database_url), read)
    if as_json:
        click.echo(to_json({"queues": queues, "workers": registered}))
        return
    if queues:
        headers = ("QUEUE", "DUE", "SCHEDULED", "RETRYING", "RUNNING", "CANCELLED", "DEAD")
        rows: list[tuple[object, ...]] = [
            (
                *(q.queue, q.due, q.scheduled, q.retrying, q.running, q.cancelled, q.dead),
                format_age(q.oldest_due_age),
                "-" if q.max_running is None else q.max_running,
            )
            for q in queues
        ]
        click.echo(format_table((*headers, "OLDEST DUE", "LIMIT"), rows))
    else:
        click.echo("no job, dead letter or queue limit")
    click.echo()
    alive = [w for w in registered if w.is_alive]
    click.echo(f"{len(alive)} live worker(s) of {len(registered)} registered")
    if registered:
        rows = [
            (
                *(w.id, w.hostname, w.pid, ",".join(w.queues), format_age(w.heartbeat_age)),
                *(w.running_jobs, "yes" if w.is_alive else "no"),
            )
            for w in registered
        ]
        headers = ("WORKER", "HOST", "PID", "QUEUES", "HEARTBEAT", "RUNNING", "ALIVE")
        click.echo(format_table(headers, rows))


@click.command("check", short_help="Check the database, the schema and the workers.")
@heartbeat_timeout_option
@database_url_option
def check_command(heartbeat_timeout: timedelta, database_url: str | None) -> None:
    """Check the database answers, its schema is at head and a worker is alive.

    One line per check; exit status 0 when all pass, 1 otherwise (for health probes).
    """
    url = resolve_database(database_url)

    async def probe(session: AsyncSession) -> HealthReport:
        return await admin.check(session, heartbeat_timeout=heartbeat_timeout)

    try:
        report = with_session(url, probe)
    except click.ClickException as exc:
        # A SQLite file that does not exist: the database check fails, the others are moot.
        report = HealthReport(
            (
                admin.CheckResult("database", False, exc.message),
                admin.CheckResult("schema", False, "not checked: database failed"),
                admin.CheckResult("workers", False, "not checked: database failed"),
            )
        )
    for result in report.results:
        click.echo(f"{'ok' if result.ok else 'FAIL':<5}{result.name}: {result.detail}")
    click.get_current_context().exit(0 if report.ok else 1)
