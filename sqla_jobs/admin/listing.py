"""Read jobs and dead letters for operators: filtered, paginated listings, counts, one in full.

Listings read only the columns a summary shows (never the payload, which may be large); the
states are computed by the database (see `states`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from sqla_jobs.clock import db_now_plus
from sqla_jobs.database_errors import summarize_error
from sqla_jobs.models import DeadLetterJob, Job

from .records import JobDetail, JobSummary
from .statements import dead_letter_conditions
from .states import JobState, job_state, state_condition

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 10_000

_JOB_SUMMARY = (
    Job.id,
    Job.name,
    Job.queue,
    Job.priority,
    job_state().label("state"),
    Job.error_count,
    Job.created_at,
    Job.run_at,
    Job.last_failed_at,
    Job.locked_by,
    Job.last_error_message,
)
_DEAD_SUMMARY = (
    DeadLetterJob.id,
    DeadLetterJob.name,
    DeadLetterJob.queue,
    DeadLetterJob.priority,
    DeadLetterJob.error_count,
    DeadLetterJob.created_at,
    DeadLetterJob.failed_at,
    DeadLetterJob.last_error_message,
)


async def list_jobs(
    session: AsyncSession,
    *,
    queue: str | None = None,
    name: str | None = None,
    state: JobState | None = None,
    older_than: timedelta | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    offset: int = 0,
) -> list[JobSummary]:
    """Return a page of jobs, newest first; `state=JobState.DEAD` lists dead letters instead.

    Filters: `queue`, task `name`, `state`, created longer than `older_than` ago (for dead
    letters: failed longer ago). `count_jobs` with the same filters gives the total.

    >>> page = await list_jobs(session, queue="mail", state=JobState.RETRYING, limit=20)
    """
    _check_page(limit, offset)
    if state is JobState.DEAD:
        return await list_dead_letters(
            session, queue=queue, name=name, older_than=older_than, limit=limit, offset=offset
        )
    query = (
        select(*_JOB_SUMMARY)
        .where(*_job_conditions(queue, name, state, older_than))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [
        JobSummary(**_job_fields(row, JobState(row.state))) for row in await session.execute(query)
    ]


async def count_jobs(
    session: AsyncSession,
    *,
    queue: str | None = None,
    name: str | None = None,
    state: JobState | None = None,
    older_than: timedelta | None = None,
) -> int:
    """Return how many jobs `list_jobs` with the same filters would list over all pages."""
    if state is JobState.DEAD:
        return await count_dead_letters(session, queue=queue, name=name, older_than=older_than)
    query = select(func.count()).where(*_job_conditions(queue, name, state, older_than))
    return await _count(session, query.select_from(Job))


async def list_dead_letters(
    session: AsyncSession,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    offset: int = 0,
) -> list[JobSummary]:
    """Return a page of dead letters (state `DEAD`), the latest failures first.

    Filters as for `retry_dead_letters` and `delete_dead_letters`, which act on what this shows.

    >>> page = await list_dead_letters(session, queue="mail", older_than=timedelta(days=1))
    """
    _check_page(limit, offset)
    conditions = dead_letter_conditions(
        queue=queue,
        name=name,
        failed_before=failed_before,
        failed_after=failed_after,
        older_than=older_than,
    )
    query = (
        select(*_DEAD_SUMMARY)
        .where(*conditions)
        .order_by(DeadLetterJob.failed_at.desc(), DeadLetterJob.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [JobSummary(**_dead_fields(row)) for row in await session.execute(query)]


async def count_dead_letters(
    session: AsyncSession,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
) -> int:
    """Return how many dead letters `list_dead_letters` with the same filters would list."""
    conditions = dead_letter_conditions(
        queue=queue,
        name=name,
        failed_before=failed_before,
        failed_after=failed_after,
        older_than=older_than,
    )
    return await _count(session, select(func.count()).select_from(DeadLetterJob).where(*conditions))


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> JobDetail | None:
    """Return job `job_id` in full, from the job table or the dead letters; None if neither.

    A dead letter is found by its own id or by the id its job had (the latest such failure).

    >>> detail = await get_job(session, uuid.UUID("6f1c…"))
    """
    found = (
        await session.execute(select(Job, job_state().label("state")).where(Job.id == job_id))
    ).first()
    if found is not None:
        job, state = found
        return JobDetail(
            **_job_fields(job, JobState(state)),
            payload=job.payload,
            context=job.context,
            error_text=job.last_error_message,
            locked_at=job.locked_at,
            cancel_reason=job.cancel_reason,
            unique_key=job.unique_key,
            timeout_seconds=job.timeout_seconds,
            snooze_count=job.snooze_count,
            original_job_id=None,
        )
    dead = await session.scalar(
        select(DeadLetterJob)
        .where(or_(DeadLetterJob.id == job_id, DeadLetterJob.original_job_id == job_id))
        # Its own id first; then the latest of the dead letters a job left (redriven jobs keep
        # their dead letter's id, so one original id can die more than once).
        .order_by((DeadLetterJob.id == job_id).desc(), DeadLetterJob.failed_at.desc())
        .limit(1)
    )
    if dead is None:
        return None
    return JobDetail(
        **_dead_fields(dead),
        payload=dead.payload,
        context=dead.context,
        error_text=dead.last_error_message,
        locked_at=None,
        cancel_reason=None,
        unique_key=dead.unique_key,
        timeout_seconds=None,
        snooze_count=0,
        original_job_id=dead.original_job_id,
    )


def _job_conditions(
    queue: str | None, name: str | None, state: JobState | None, older_than: timedelta | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if queue is not None:
        conditions.append(Job.queue == queue)
    if name is not None:
        conditions.append(Job.name == name)
    if state is not None:
        conditions.append(state_condition(JobState(state)))
    if older_than is not None:
        conditions.append(Job.created_at < db_now_plus(-older_than.total_seconds()))
    return conditions


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be an int from 1 to {MAX_PAGE_SIZE}, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, not {offset!r}")


async def _count(session: AsyncSession, query: Select[int]) -> int:
    return int(await session.scalar(query) or 0)


def _error_line(text: str | None) -> str | None:
    return (summarize_error(text) or None) if text else None


def _job_fields(job: Any, state: JobState) -> dict[str, Any]:
    """Return a summary's fields from a `Job`, or a row of its `_JOB_SUMMARY` columns."""
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "priority": job.priority,
        "state": state,
        "attempts": job.error_count,
        "created_at": job.created_at,
        "run_at": job.run_at,
        "failed_at": job.last_failed_at,
        "locked_by": job.locked_by,
        "error": _error_line(job.last_error_message),
    }


def _dead_fields(dead: Any) -> dict[str, Any]:
    """Return a summary's fields from a `DeadLetterJob`, or a row of `_DEAD_SUMMARY` columns."""
    return {
        "id": dead.id,
        "name": dead.name,
        "queue": dead.queue,
        "priority": dead.priority,
        "state": JobState.DEAD,
        "attempts": dead.error_count,
        "created_at": dead.created_at,
        "run_at": None,
        "failed_at": dead.failed_at,
        "locked_by": None,
        "error": _error_line(dead.last_error_message),
    }
