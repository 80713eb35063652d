"""``sqla-jobs list``, ``show``, ``enqueue`` and ``cancel``: read and steer single jobs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs import admin
from sqla_jobs.admin import JobDetail, JobState, JobSummary
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.worker_arguments import import_modules, import_option

from .common import (
    BadSettings,
    CommandFailed,
    database_url_option,
    load_settings,
    resolve_database,
    with_session,
)
from .output import DURATION, format_instant, format_table, to_json

MAX_ERROR_WIDTH = 60


@click.command("list", short_help="List jobs or dead letters.")
@click.option("--dead", is_flag=True, help="List dead letters instead of jobs.")
@click.option("--queue", help="Only this queue.")
@click.option("--name", help="Only jobs of this task.")
@click.option(
    "--state",
    type=click.Choice([state.value for state in JobState]),
    help="Only jobs in this state.",
)
@click.option(
    "--older-than",
    type=DURATION,
    help="Only jobs created (dead letters: failed) longer ago than this, e.g. 1h, 7d.",
)
@click.option("--limit", type=click.IntRange(1, admin.MAX_PAGE_SIZE), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@database_url_option
def list_command(
    dead: bool,
    queue: str | None,
    name: str | None,
    state: str | None,
    older_than: timedelta | None,
    limit: int,
    offset: int,
    as_json: bool,
    database_url: str | None,
) -> None:
    """List jobs (newest first) or, with --dead, dead letters (latest failures first)."""
    if dead and state not in (None, JobState.DEAD.value):
        raise click.UsageError(f"--dead lists dead letters: it cannot take --state {state}")
    chosen = JobState.DEAD if dead else (JobState(state) if state else None)
    filters: dict[str, Any] = {
        "queue": queue,
        "name": name,
        "state": chosen,
        "older_than": older_than,
    }

    async def read(session: AsyncSession) -> tuple[list[JobSummary], int]:
        page = await admin.list_jobs(session, limit=limit, offset=offset, **filters)
        return page, await admin.count_jobs(session, **filters)

    page, total = with_session(resolve_database(database_url), read)
    if as_json:
        click.echo(to_json(page))
        return
    what = "dead letters" if chosen is JobState.DEAD else "jobs"
    if page:
        headers = ("ID", "STATE", "QUEUE", "NAME", "ATTEMPTS", "CREATED", "DUE/FAILED", "ERROR")
        rows = [
            (
                job.id,
                job.state,
                job.queue,
                job.name,
                job.attempts,
                job.created_at,
                job.failed_at if job.state is JobState.DEAD else job.run_at,
                _shorten(job.error),
            )
            for job in page
        ]
        click.echo(format_table(headers, rows))
    click.echo(f"{len(page)} of {total} {what}" + (f" (from {offset + 1})" if offset else ""))


@click.command("show", short_help="Show one job or dead letter in full.")
@click.argument("job_id", metavar="ID", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@database_url_option
def show_command(job_id: uuid.UUID, as_json: bool, database_url: str | None) -> None:
    """Show a job or dead letter in full: payload, attempts, last error and traceback."""
    detail = with_session(
        resolve_database(database_url), lambda session: admin.get_job(session, job_id)
    )
    if detail is None:
        raise CommandFailed(f"no job or dead letter has the id {job_id}")
    click.echo(to_json(detail) if as_json else _describe(detail))


@click.command("enqueue", short_help="Enqueue a job of a registered task.")
@click.argument("name")
@click.option("--payload", default="{}", show_default=True, help="The task's fields as JSON.")
@click.option("--queue", help="Overrides the task's queue.")
@click.option("--priority", type=int, help="Overrides the task's priority.")
@click.option(
    "--run-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="When it is due (ISO 8601; UTC unless an offset is given).",
)
@click.option("--delay", type=DURATION, help="Due this long after the insert, e.g. 10m.")
@click.option("--context", default="", help="Free text stored with the job.")
@import_option()
@database_url_option
def enqueue_command(
    name: str,
    payload: str,
    queue: str | None,
    priority: int | None,
    run_at: datetime | None,
    delay: timedelta | None,
    context: str,
    imports: tuple[str, ...],
    database_url: str | None,
) -> None:
    """Enqueue a job of task NAME, its payload validated by the task."""
    settings = load_settings(database_url)
    try:
        import_modules([*settings.imports, *imports])
    except ConfigurationError as exc:
        raise BadSettings(str(exc)) from None
    if run_at is not None and run_at.tzinfo is None:
        run_at = run_at.replace(tzinfo=UTC)
    if run_at is not None and delay is not None:
        raise click.UsageError("give --run-at or --delay, not both")

    async def add(session: AsyncSession) -> uuid.UUID:
        job = await admin.enqueue_by_name(
            session,
            name,
            payload,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            context=context,
        )
        job_id = job.id
        await session.commit()
        return job_id

    click.echo(with_session(resolve_database(database_url), add))


@click.command("cancel", short_help="Cancel jobs.")
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, type=click.UUID)
@click.option("--reason", default=admin.DEFAULT_CANCEL_REASON, show_default=True)
@database_url_option
def cancel_command(job_ids: tuple[uuid.UUID, ...], reason: str, database_url: str | None) -> None:
    """Cancel jobs: a waiting one never runs, a running async one is stopped."""

    async def cancel(session: AsyncSession) -> int:
        cancelled = await admin.cancel_jobs(session, job_ids, reason)
        await session.commit()
        return cancelled

    cancelled = with_session(resolve_database(database_url), cancel)
    asked = len(set(job_ids))
    if cancelled == 0:
        raise CommandFailed(f"no job was cancelled: none of the {asked} id(s) is a job still there")
    others = "" if cancelled == asked else " (the others had finished or do not exist)"
    click.echo(f"cancelled {cancelled} of {asked} job(s){others}")


def _describe(detail: JobDetail) -> str:
    fields = [
        ("id", detail.id),
        ("state", detail.state.value),
        ("name", detail.name),
        ("queue", detail.queue),
        ("priority", detail.priority),
        ("attempts", detail.attempts),
        ("created at", format_instant(detail.created_at)),
        ("due at", format_instant(detail.run_at)),
        ("failed at", format_instant(detail.failed_at)),
        ("locked by", detail.locked_by or "-"),
        ("cancel reason", detail.cancel_reason or "-"),
        ("unique key", detail.unique_key or "-"),
        ("context", detail.context or "-"),
    ]
    if detail.original_job_id is not None:
        fields.append(("original job id", detail.original_job_id))
    lines = [f"{label + ':':<17}{value}" for label, value in fields]
    lines += ["payload:", json.dumps(detail.payload, indent=2, ensure_ascii=False)]
    if detail.error_text:
        lines += ["last error:", detail.error_text.rstrip()]
    return "\n".join(lines)


def _shorten(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_WIDTH:
        return text
    return text[: MAX_ERROR_WIDTH - 1] + "…"
