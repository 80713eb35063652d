"""Statements for operators; each is built here and executed on the caller's own session."""

from __future__ import annotations

import uuid

from sqlalchemy import Update, update

from sqla_jobs.models import Job

DEFAULT_CANCEL_REASON = "cancelled by request"


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
