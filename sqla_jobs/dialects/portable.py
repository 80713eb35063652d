"""Statements whose SQL is the same on every supported dialect (the clock differs, not the SQL)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Delete,
    Executable,
    Insert,
    Select,
    String,
    Update,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.elements import BindParameter

from sqla_jobs.clock import db_now, db_now_plus
from sqla_jobs.ids import new_job_id
from sqla_jobs.models import DeadLetterJob, Job, QueueLimit, WorkerRecord

from .claim import deferred, running_count


class PortableStatements:
    """Statements the same on every dialect; subclasses add the claim and what differs."""

    def delete_jobs(
        self, *, worker_id: str, job_ids: Sequence[uuid.UUID] | BindParameter[Any]
    ) -> Delete:
        """Delete the jobs `worker_id` still holds among `job_ids` (they succeeded)."""
        return delete(Job).where(Job.id.in_(job_ids), Job.locked_by == worker_id)

    def delete_batch(self, *, worker_id: str) -> Delete:
        """Delete the jobs `worker_id` still holds among the list of ids bound to ``job_ids``
        (the recorder's batches of succeeded jobs)."""
        return self.delete_jobs(worker_id=worker_id, job_ids=bindparam("job_ids", expanding=True))

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

    def snooze_job(self, *, worker_id: str, job_id: uuid.UUID, delay: timedelta) -> Update:
        """Unlock the job, due again `delay` from now, counting a snooze (not a failure)."""
        return (
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(
                locked_by=None,
                locked_at=None,
                snooze_count=Job.snooze_count + 1,
                run_at=db_now_plus(delay.total_seconds()),
            )
        )

    def dead_letter_job(
        self, *, worker_id: str | None, job_id: uuid.UUID, error: str
    ) -> tuple[Insert, Delete]:
        """Copy the job into the dead-letter table, then delete it (run both in one transaction).

        Guarded by ``locked_by = worker_id``, or, with `worker_id` None, by the job being unlocked.
        """
        owner = Job.locked_by.is_(None) if worker_id is None else Job.locked_by == worker_id
        held = (Job.id == job_id, owner)
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
                DeadLetterJob.unique_key,
            ],
            select(
                literal(new_job_id(), Uuid()),
                Job.id,
                Job.name,
                Job.payload,
                Job.queue,
                Job.priority,
                Job.context,
                Job.error_count + 1,
                literal(error),
                Job.created_at,
                Job.unique_key,
            )
            .where(*held)
            # Locks the row it copies, so the delete that follows finds exactly that row,
            # even if another worker tries to take the job over in between.
            .with_for_update(),
        )
        return copy, delete(Job).where(*held)

    def release_locks(
        self, *, worker_id: str, keep: Sequence[uuid.UUID] | BindParameter[Any] = ()
    ) -> Update:
        """Unlock every job `worker_id` holds but those in `keep`, so any worker can claim them."""
        return (
            update(Job)
            .where(Job.locked_by == worker_id, Job.id.not_in(keep))
            .values(locked_by=None, locked_at=None)
        )

    def release_jobs(
        self, *, worker_id: str, job_ids: Sequence[uuid.UUID] | BindParameter[Any]
    ) -> Update:
        """Unlock the jobs `worker_id` holds among `job_ids`."""
        return (
            update(Job)
            .where(Job.locked_by == worker_id, Job.id.in_(job_ids))
            .values(locked_by=None, locked_at=None)
        )

    def held_jobs(self, *, worker_id: str) -> Select[uuid.UUID]:
        """Select the ids of the jobs `worker_id` holds."""
        return select(Job.id).where(Job.locked_by == worker_id)

    def register_worker(
        self, *, worker_id: str, hostname: str, pid: int, queues: Sequence[str]
    ) -> Insert:
        """Insert this worker's registration; its heartbeat starts now."""
        return insert(WorkerRecord).values(
            id=worker_id, hostname=hostname, pid=pid, queues=list(queues)
        )

    def heartbeat(self, *, worker_id: str) -> Update:
        """Mark `worker_id` alive now (0 rows: its registration was removed as dead)."""
        return (
            update(WorkerRecord).where(WorkerRecord.id == worker_id).values(heartbeat_at=db_now())
        )

    def unregister_worker(self, *, worker_id: str) -> Delete:
        """Remove `worker_id`'s registration."""
        return delete(WorkerRecord).where(WorkerRecord.id == worker_id)

    def declare_dead_workers(self, *, heartbeat_timeout: timedelta) -> ReturningDelete[str]:
        """Delete the registrations silent for `heartbeat_timeout`, returning their ids.

        Deleting is what ends a lease: a late heartbeat of such a worker then finds no row and
        it knows its jobs are no longer its own; its jobs are now `lost_jobs`.
        """
        return (
            delete(WorkerRecord)
            .where(WorkerRecord.heartbeat_at < db_now_plus(-heartbeat_timeout.total_seconds()))
            .returning(WorkerRecord.id)
        )

    def lost_jobs(
        self, *, grace: timedelta, limit: int
    ) -> Select[uuid.UUID, str, int, str, str | None, str, datetime]:
        """Select jobs locked by a worker id that has no registration, locked over `grace` ago.

        Rows: (id, name, error_count, locked_by, cancel_reason, queue, run_at). Those are the
        jobs of workers declared dead, and locks no live worker explains (a row written by hand,
        a worker that never registered); `grace` covers a claim racing its worker's
        registration.
        """
        registered = select(WorkerRecord.id).where(WorkerRecord.id == Job.locked_by).exists()
        return (
            select(
                Job.id,
                Job.name,
                Job.error_count,
                type_coerce(Job.locked_by, String),
                Job.cancel_reason,
                Job.queue,
                Job.run_at,
            )
            .where(
                Job.locked_by.is_not(None),
                ~registered,
                or_(
                    Job.locked_at.is_(None),
                    Job.locked_at < db_now_plus(-grace.total_seconds()),
                ),
            )
            .limit(limit)
        )

    def cancel_requests(self, *, worker_id: str) -> Select[uuid.UUID, str | None]:
        """Select (id, cancel_reason) of the jobs `worker_id` runs that were asked to stop."""
        return select(Job.id, Job.cancel_reason).where(
            Job.locked_by == worker_id, Job.cancel_reason.is_not(None)
        )

    def cancelled_queued_jobs(self, *, limit: int) -> Select[uuid.UUID, str | None]:
        """Select (id, cancel_reason) of cancelled jobs that no worker runs."""
        return (
            select(Job.id, Job.cancel_reason)
            .where(Job.locked_by.is_(None), Job.cancel_reason.is_not(None))
            .limit(limit)
        )

    def limited_queues(self, *, queues: Sequence[str]) -> Select[str]:
        """Select those of `queues` that have a cluster-wide limit (a sqla_jobs_queue_limit row)."""
        return select(QueueLimit.queue).where(QueueLimit.queue.in_(queues))

    def lock_queue_limit(self, *, queue: str) -> Select[int]:
        """Select `queue`'s `max_running`, locking its row until the transaction ends (no row:
        no limit).

        On PostgreSQL, every claim of a limited queue takes this lock first, so those claims
        run one at a time, cluster-wide.
        """
        return select(QueueLimit.max_running).where(QueueLimit.queue == queue).with_for_update()

    def running_jobs(self, *, queue: str) -> Select[int]:
        """Select how many jobs of `queue` workers hold (running, or waiting to be rescued)."""
        return select(running_count(queue))

    def next_due(self, *, queues: Sequence[str]) -> Select[datetime, datetime]:
        """Select the earliest future `run_at` of waiting jobs of `queues` (or NULL), and the
        database's now.

        Per queue, the first future entry of ix_sqla_jobs_job_deferred_run_at: one index probe
        each, whatever the backlog; the smallest of those is the answer. A future job is always
        a deferred one (`run_at > created_at`), and the index holds only those.
        """
        per_queue = [
            select(Job.run_at)
            .where(Job.queue == queue, *deferred(), Job.run_at > db_now())
            .order_by(Job.run_at)
            .limit(1)
            .subquery()
            for queue in queues
        ]
        earliest = union_all(*(select(arm.c.run_at) for arm in per_queue)).subquery("earliest")
        return select(func.min(earliest.c.run_at), db_now())

    def analyze_jobs(self) -> Executable:
        """Refresh the planner's statistics of the job table."""
        return text(f"ANALYZE {Job.__tablename__}")
