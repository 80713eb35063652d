"""Statements whose SQL is the same on every supported dialect (the clock differs, not the SQL)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Delete,
    Insert,
    Select,
    Update,
    Uuid,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from sqla_jobs.clock import db_now, db_now_plus
from sqla_jobs.models import DeadLetterJob, Job

CLAIMED_COLUMNS = (
    Job.id,
    Job.name,
    Job.payload,
    Job.queue,
    Job.priority,
    Job.run_at,
    Job.created_at,
    Job.context,
    Job.error_count,
)
"""What a claim returns: the fields of `ClaimedJob`, in its order."""


class SharedStatements:
    """The guarded writes to a claimed row; subclasses add the dialect's claim."""

    def complete_jobs(self, *, worker_id: str, job_ids: Sequence[uuid.UUID]) -> Delete:
        """Delete the jobs `worker_id` still holds among `job_ids`."""
        return delete(Job).where(Job.id.in_(job_ids), Job.locked_by == worker_id)

    def retry_job(
        self, *, worker_id: str, job_id: uuid.UUID, error: str, delay: timedelta
    ) -> Update:
        """Record a failure and unlock the job, due again `delay` from now."""
        return (
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(
                locked_by=None,
                locked_at=None,
                error_count=Job.error_count + 1,
                last_error_message=error,
                last_failed_at=db_now(),
                run_at=db_now_plus(delay.total_seconds()),
            )
        )

    def dead_letter_job(
        self, *, worker_id: str, job_id: uuid.UUID, error: str
    ) -> tuple[Insert, Delete]:
        """Copy the job into the dead-letter table, then delete it (run both in one transaction)."""
        held = (Job.id == job_id, Job.locked_by == worker_id)
        copy = insert(DeadLetterJob).from_select(
            [
                DeadLetterJob.id,
                DeadLetterJob.original_job_id,
                DeadLetterJob.name,
                DeadLetterJob.payload,
                DeadLetterJob.queue,
                DeadLetterJob.priority,
                DeadLetterJob.context,
                DeadLetterJob.error_count,
                DeadLetterJob.last_error_message,
                DeadLetterJob.created_at,
            ],
            select(
                literal(uuid.uuid4(), Uuid()),
                Job.id,
                Job.name,
                Job.payload,
                Job.queue,
                Job.priority,
                Job.context,
                Job.error_count + 1,
                literal(error),
                Job.created_at,
            ).where(*held),
        )
        return copy, delete(Job).where(*held)

    def release_locks(self, *, worker_id: str) -> Update:
        """Unlock every job `worker_id` holds, so any worker can claim them at once."""
        return update(Job).where(Job.locked_by == worker_id).values(locked_by=None, locked_at=None)

    def next_due(self, *, queues: Sequence[str]) -> Select[datetime, datetime]:
        """Select the earliest future `run_at` among unlocked jobs, and the database's now."""
        earliest = func.min(Job.run_at).label("earliest")
        return select(earliest, db_now()).where(
            Job.queue.in_(queues), Job.locked_at.is_(None), Job.run_at > db_now()
        )

    def wake_workers_for_held_jobs(self, *, worker_id: str) -> Select[Any] | None:
        """Return None: this database cannot wake other processes."""
        return None
