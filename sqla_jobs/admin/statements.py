"""Statements for operators; each is built here and executed on the caller's own session.

`sqla_jobs.admin.operations` runs them for the CLI and the dashboard (in batches, with
commits); applications may run them in their own transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Delete, Integer, Select, Update, delete, exists, literal, select, update
from sqlalchemy.sql.elements import ColumnElement

from sqla_jobs.clock import db_now_plus
from sqla_jobs.dialects.insert_unless_taken import InsertJobsUnlessTaken
from sqla_jobs.dialects.queue_limit import UpsertQueueLimit
from sqla_jobs.models import DeadLetterJob, Job, QueueLimit
from sqla_jobs.options import MAX_QUEUE_LIMIT, check_queue

DEFAULT_CANCEL_REASON = "cancelled by request"
DEFAULT_REDRIVE_BATCH_SIZE = 1000

_Batch = TypeVar("_Batch", bound=Select[*tuple[Any, ...]])


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
    return update(Job).where(Job.id == job_id).values(cancel_reason=_checked_reason(reason))


def cancel_many(job_ids: Iterable[uuid.UUID], *, reason: str = DEFAULT_CANCEL_REASON) -> Update:
    """Return the statement that cancels each job of `job_ids`, as `cancel()` does one.

    Its rowcount is the number of jobs that were still there to cancel.

    >>> await session.execute(cancel_many([first_id, second_id]))
    >>> await session.commit()
    """
    reason = _checked_reason(reason)
    return update(Job).where(Job.id.in_(list(job_ids))).values(cancel_reason=reason)


def _checked_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason or "\x00" in reason:
        raise ValueError("reason must be a non-empty string without NUL characters")
    return reason


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


class Redrive(NamedTuple):
    """The two statements of `redrive()`: run both, in this order, in one transaction."""

    insert: InsertJobsUnlessTaken
    """Inserts the fresh jobs; a dead letter whose unique key is taken again is skipped."""
    delete: Delete
    """Deletes the dead letters that were inserted; its rowcount is how many were redriven."""


_REDRIVEN_COLUMNS = ("id", "name", "payload", "queue", "priority", "context", "error_count")


def redrive(
    ids: Iterable[uuid.UUID] | None = None,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
    batch_size: int = DEFAULT_REDRIVE_BATCH_SIZE,
) -> Redrive:
    """Return the statements that move dead letters back into the queue as fresh jobs.

    Which dead letters: those among `ids` (dead-letter ids, not the original jobs'), of
    `queue`, of task `name`, failed before `failed_before` and after `failed_after`, failed
    longer than `older_than` ago (by the database's clock); every condition given must hold.
    At most `batch_size` of them, the oldest failures first. Each becomes a new job due now,
    with no errors, and the dead letter's name, payload, queue, priority, context and unique
    key; its id is the dead letter's own (new to the job table).
    A unique job whose key another job holds again is left in the dead-letter table, without
    error: your transaction goes on. Execute both statements, in order, in one transaction;
    the second's rowcount is the number of jobs redriven (run again until it is 0 to redrive
    everything that matches).

    >>> insert, delete = redrive(queue="mail", failed_after=an_hour_ago)
    >>> await session.execute(insert)
    >>> redriven = (await session.execute(delete)).rowcount
    >>> await session.commit()
    """
    _check_batch_size(batch_size)
    chosen = dead_letter_conditions(
        ids,
        queue=queue,
        name=name,
        failed_before=failed_before,
        failed_after=failed_after,
        older_than=older_than,
    )
    # Read through the unique-key index: a dead letter whose key is taken is passed over, so
    # it neither fails the insert nor fills every batch while others wait behind it.
    key_is_taken = exists().where(
        Job.name == DeadLetterJob.name, Job.unique_key == DeadLetterJob.unique_key
    )
    batch = _oldest_first(
        select(
            DeadLetterJob.id,
            DeadLetterJob.name,
            DeadLetterJob.payload,
            DeadLetterJob.queue,
            DeadLetterJob.priority,
            DeadLetterJob.context,
            literal(0, Integer()),
            DeadLetterJob.unique_key,
        ).where(*chosen, ~key_is_taken),
        batch_size,
    )
    # Any conflict is skipped: a key taken since the select above, or a dead letter that a
    # concurrent redrive inserted already (same id).
    insert = InsertJobsUnlessTaken((*_REDRIVEN_COLUMNS, "unique_key"), batch, on_unique_key=False)
    # A job with a dead letter's id exists only if the insert above made it: its dead letter
    # goes, and one whose insert was skipped stays.
    inserted = exists().where(Job.id == DeadLetterJob.id)
    return Redrive(insert, delete(DeadLetterJob).where(*chosen, inserted))


def purge(
    ids: Iterable[uuid.UUID] | None = None,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
    batch_size: int = DEFAULT_REDRIVE_BATCH_SIZE,
) -> Delete:
    """Return the statement that deletes up to `batch_size` dead letters, oldest failures first.

    Which dead letters: as for `redrive()`. Its rowcount is the number deleted; run it again
    (one transaction each) until it is 0 to delete everything that matches.

    >>> await session.execute(purge(older_than=timedelta(days=7)))
    >>> await session.commit()
    """
    _check_batch_size(batch_size)
    chosen = dead_letter_conditions(
        ids,
        queue=queue,
        name=name,
        failed_before=failed_before,
        failed_after=failed_after,
        older_than=older_than,
    )
    batch = _oldest_first(select(DeadLetterJob.id).where(*chosen), batch_size)
    return delete(DeadLetterJob).where(DeadLetterJob.id.in_(batch.scalar_subquery()))


def dead_letter_conditions(
    ids: Iterable[uuid.UUID] | None = None,
    *,
    queue: str | None = None,
    name: str | None = None,
    failed_before: datetime | None = None,
    failed_after: datetime | None = None,
    older_than: timedelta | None = None,
) -> list[ColumnElement[bool]]:
    """Return the conditions a dead letter must meet to be chosen (all of them); [] for all."""
    chosen: list[ColumnElement[bool]] = []
    if ids is not None:
        chosen.append(DeadLetterJob.id.in_(list(ids)))
    if queue is not None:
        chosen.append(DeadLetterJob.queue == queue)
    if name is not None:
        chosen.append(DeadLetterJob.name == name)
    if failed_before is not None:
        chosen.append(DeadLetterJob.failed_at < failed_before)
    if failed_after is not None:
        chosen.append(DeadLetterJob.failed_at > failed_after)
    if older_than is not None:
        chosen.append(DeadLetterJob.failed_at < db_now_plus(-older_than.total_seconds()))
    return chosen


def _oldest_first(query: _Batch, batch_size: int) -> _Batch:
    """Return `query` (of dead letters) limited to its `batch_size` oldest failures."""
    return (
        query.order_by(DeadLetterJob.failed_at, DeadLetterJob.id)
        .limit(batch_size)
        # Concurrent redrives and purges pass over each other's dead letters instead of
        # waiting for them.
        .with_for_update(skip_locked=True)
    )


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be an int of at least 1")
