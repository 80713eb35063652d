"""The state of the whole queue at a glance: counts per queue and state, and the live workers.

Everything is counted by GROUP BY in the database and every age measured by its clock, so a
glance costs a few queries whatever the backlog, and agrees with what the workers see.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sqla_jobs.clock import db_now
from sqla_jobs.models import DeadLetterJob, Job, QueueLimit, WorkerRecord

from .records import QueueStats, WorkerInfo
from .states import JOB_STATES, JobState, state_condition

DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=30)
"""A worker silent this long counts as dead (the workers' own default `heartbeat_timeout`)."""


async def queue_stats(session: AsyncSession) -> list[QueueStats]:
    """Return the jobs of each queue by state, with its oldest due job's age, by queue name.

    A queue appears when it has a job, a dead letter or a limit.

    >>> for stats in await queue_stats(session):
    ...     print(stats.queue, stats.due, stats.oldest_due_age)
    """
    now = await database_now(session)
    counts = [
        func.sum(case((state_condition(state), 1), else_=0), type_=Integer).label(state.value)
        for state in JOB_STATES
    ]
    oldest_due = func.min(case((state_condition(JobState.DUE), Job.run_at))).label("oldest_due")
    per_queue: dict[str, dict[str, Any]] = {}
    for row in await session.execute(select(Job.queue, *counts, oldest_due).group_by(Job.queue)):
        fields = per_queue.setdefault(row.queue, {})
        fields |= {state.value: int(getattr(row, state.value) or 0) for state in JOB_STATES}
        if row.oldest_due is not None:
            fields["oldest_due_age"] = _age(now, row.oldest_due)
    dead = select(DeadLetterJob.queue, func.count()).group_by(DeadLetterJob.queue)
    for queue, count in await session.execute(dead):
        per_queue.setdefault(queue, {})["dead"] = count
    for queue, max_running in await session.execute(
        select(QueueLimit.queue, QueueLimit.max_running)
    ):
        per_queue.setdefault(queue, {})["max_running"] = max_running
    return [QueueStats(queue=queue, **per_queue[queue]) for queue in sorted(per_queue)]


async def workers(
    session: AsyncSession, *, heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT
) -> list[WorkerInfo]:
    """Return the registered workers, with their heartbeat age and running jobs, by id.

    A worker whose heartbeat is older than `heartbeat_timeout` is listed with `is_alive`
    False: it died without unregistering, and no live worker has swept it away yet.

    >>> alive = [w for w in await workers(session) if w.is_alive]
    """
    now = await database_now(session)
    running = (
        select(Job.locked_by, func.count().label("running"))
        .where(Job.locked_by.is_not(None))
        .group_by(Job.locked_by)
        .subquery()
    )
    query = (
        select(WorkerRecord, func.coalesce(running.c.running, 0))
        .outerjoin(running, running.c.locked_by == WorkerRecord.id)
        .order_by(WorkerRecord.id)
    )
    found = []
    for record, running_jobs in await session.execute(query):
        age = _age(now, record.heartbeat_at)
        found.append(
            WorkerInfo(
                id=record.id,
                hostname=record.hostname,
                pid=record.pid,
                queues=tuple(record.queues or ()),
                started_at=record.started_at,
                heartbeat_at=record.heartbeat_at,
                heartbeat_age=age,
                running_jobs=int(running_jobs),
                is_alive=age < heartbeat_timeout.total_seconds(),
            )
        )
    return found


async def database_now(session: AsyncSession) -> datetime:
    """Return the database's current time (UTC), the clock every age here is measured by."""
    now: datetime | None = await session.scalar(select(db_now()))
    if now is None:
        raise RuntimeError("the database returned no current time")
    return now


def _age(now: datetime, then: datetime) -> float:
    # A clock stepped back, or a row written in this very transaction: never a negative age.
    return max((now - then).total_seconds(), 0.0)
