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
    Text,
    Update,
    Uuid,
    cast,
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
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from sqla_jobs.clock import db_now, db_now_plus
from sqla_jobs.models import DeadLetterJob, Job, WorkerRecord

CLAIMED_COLUMNS = (
    Job.id,
    Job.name,
    # JSON text, decoded when the job runs: a row that is not valid JSON fails alone, and
    # pydantic reads the text directly (model_validate_json) instead of a decoded dict.
    cast(Job.payload, Text).label("payload"),
    Job.queue,
    Job.priority,
    # Read as stored (SQLite: text), parsed per row by ClaimedJob.from_row for the same reason.
    type_coerce(Job.run_at, String).label("run_at"),
    type_coerce(Job.created_at, String).label("created_at"),
    Job.context,
    Job.error_count,
    Job.timeout_seconds,
    Job.snooze_count,
)
"""What a claim returns, by column name: `ClaimedJob.from_row` reads it."""


CLAIM_ORDER = (Job.priority.desc(), Job.run_at, Job.id)
"""Best first: higher priority first; within a priority, the job due longest first (`run_at`,
the time it became due, whether enqueued, scheduled or retried); `id` breaks ties, so the order
is total. It is the order of the claim index, ix_sqla_jobs_job_waiting_claim."""


def waiting() -> tuple[ColumnElement[bool], ...]:
    """Return the conditions of a waiting job: no worker holds it and nobody cancelled it.

    They are the predicate of the partial indexes the claim and `next_due` read; a query must
    repeat them for the planner to use those indexes.
    """
    return (Job.locked_by.is_(None), Job.cancel_reason.is_(None))


def deferred() -> tuple[ColumnElement[bool], ...]:
    """Return the conditions of a waiting job that was scheduled or retried (`run_at` moved
    past `created_at`): the predicate of ix_sqla_jobs_job_deferred_run_at."""
    return (*waiting(), Job.run_at > Job.created_at)


def claimable(queue: str) -> tuple[ColumnElement[bool], ...]:
    """Return the conditions of a job of `queue` any worker may claim now: waiting and due.

    A locked job belongs to its worker for as long as that worker's lease lives, however old
    its lock; only the rescuer frees it (see `lost_jobs`).
    """
    return (Job.queue == queue, *waiting(), Job.run_at <= db_now())


def best_claimable(queues: Sequence[str], limit: int) -> list[Select[uuid.UUID, int, datetime]]:
    """Select, per queue, (id, priority, run_at) of its best `limit` claimable jobs, best first.

    One select per queue, each reading ix_sqla_jobs_job_waiting_claim in order from the
    queue's highest priority and stopping after `limit` entries: a `queue IN (...)` scan
    could not read one index in order, and would sort every due job of every queue. The
    entries it walks past are future jobs of a higher priority than the due ones, if any
    (index entries only, no table rows).
    """
    return [
        select(Job.id, Job.priority, Job.run_at)
        .where(*claimable(queue))
        .order_by(*CLAIM_ORDER)
        .limit(limit)
        for queue in queues
    ]


def claim_candidates(
    per_queue: Sequence[Select[uuid.UUID, int, datetime]], limit: int
) -> Select[uuid.UUID]:
    """Select the ids of the best `limit` among the per-queue selects' rows, best first.

    The sort it needs is of those rows only: at most `limit` per queue.
    """
    # Each arm as a subquery: a LIMITed (and, on PostgreSQL, locking) select cannot stand as a
    # term of UNION ALL itself.
    arms = [select(*arm.subquery().c) for arm in per_queue]
    candidates = union_all(*arms).subquery("candidates")
    return (
        select(candidates.c.id)
        .order_by(candidates.c.priority.desc(), candidates.c.run_at, candidates.c.id)
        .limit(limit)
    )


class PortableStatements:
    """Statements the same on every dialect; subclasses add the claim and what differs."""

    def delete_jobs(
        self, *, worker_id: str, job_ids: Sequence[uuid.UUID] | BindParameter[Any]
    ) -> Delete:
        """Delete the jobs `worker_id` still holds among `job_ids` (they succeeded)."""
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
    ) -> Select[uuid.UUID, str, int, str, str | None]:
        """Select jobs locked by a worker id that has no registration, locked over `grace` ago.

        Rows: (id, name, error_count, locked_by, cancel_reason). Those are the jobs of workers
        declared dead, and locks no live worker explains (a row written by hand, a worker that
        never registered); `grace` covers a claim racing its worker's registration.
        """
        registered = select(WorkerRecord.id).where(WorkerRecord.id == Job.locked_by).exists()
        return (
            select(
                Job.id,
                Job.name,
                Job.error_count,
                type_coerce(Job.locked_by, String),
                Job.cancel_reason,
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
