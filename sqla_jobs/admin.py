"""Statements for operators; each is built here and executed on the caller's own session."""

from __future__ import annotations

import uuid

from sqlalchemy import Delete, Update, delete, update

from sqla_jobs.dialects.queue_limit import UpsertQueueLimit
from sqla_jobs.models import Job, QueueLimit
from sqla_jobs.options import check_queue

DEFAULT_CANCEL_REASON = "cancelled by request"
MAX_QUEUE_LIMIT = 2**31 - 1
"""The largest `max_running` (the column is an INTEGER)."""


def cancel(job_id: uuid.UUID, *, reason: str = DEFAULT_CANCEL_REASON) -> Update:
    """Return the statement that cancels job `job_id`; it takes effect when you commit.

    A queued job is never run: the next heartbeat of any worker moves it to the dead-letter
    table. A running async job is cancelled by its worker (at once on PostgreSQL, through
    NOTIFY; within a heartbeat interval elsewhere) and dead-lettered with `reason`. A running
    sync job cannot be interrupted: its result is ignored and it is dead-lettered all the same.
    0 rows affected: the job had already finished.

    >>> await session.execute(cancel(job_id, reason="customer deleted"))
    >>> await session.commit()
    """
    if not reason or "\x00" in reason:
        raise ValueError("reason must be a non-empty string without NUL characters")
    return update(Job).where(Job.id == job_id).values(cancel_reason=reason)


def set_queue_limit(queue: str, max_running: int) -> UpsertQueueLimit:
    """Return the statement that lets at most `max_running` jobs of `queue` run at once,
    across every worker on every host; it takes effect when you commit.

    It replaces the queue's previous limit. Jobs already running go on; claims that start
    after the commit obey the new limit. 0 pauses the queue (no new job of it starts).

    >>> await session.execute(set_queue_limit("payments", 2))
    >>> await session.commit()
    """
    queue = check_queue(queue)
    if not isinstance(max_running, int) or isinstance(max_running, bool) or max_running < 0:
        raise ValueError(f"max_running must be an int >= 0, not {max_running!r}")
    if max_running > MAX_QUEUE_LIMIT:
        raise ValueError(f"max_running must be at most {MAX_QUEUE_LIMIT}, not {max_running}")
    return UpsertQueueLimit(queue, max_running)


def remove_queue_limit(queue: str) -> Delete:
    """Return the statement that removes `queue`'s cluster-wide limit; 0 rows: it had none.

    >>> await session.execute(remove_queue_limit("payments"))
    >>> await session.commit()
    """
    return delete(QueueLimit).where(QueueLimit.queue == check_queue(queue))
