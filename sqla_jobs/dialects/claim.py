"""The claim's building blocks, shared by the PostgreSQL and SQLite claims: what a claim returns,
which jobs it may take and in what order, per-queue limits, and the counts queue limits need."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    Text,
    bindparam,
    cast,
    exists,
    func,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job, QueueLimit

CLAIMED_COLUMNS = (
    Job.id,
    Job.name,
    # JSON text, decoded when the job runs: a row that is not valid JSON fails alone, and
    # pydantic reads the text directly (model_validate_json) instead of a decoded dict.
    cast(Job.payload, Text).label("payload"),
    Job.queue,
    Job.priority,
    # Read as stored (SQLite: text), parsed per row by ClaimedJob.from_rows for the same reason.
    type_coerce(Job.run_at, String).label("run_at"),
    type_coerce(Job.created_at, String).label("created_at"),
    Job.context,
    Job.error_count,
    Job.timeout_seconds,
    Job.snooze_count,
    Job.trace_context,
)
"""What a claim returns, by column name: `ClaimedJob.from_rows` reads it."""


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
    # "Due" compares with (SELECT now()), a value the planner cannot see: it then assumes a
    # third of the waiting jobs are due and reads the claim index in order, stopping after
    # LIMIT rows. Compared with now() itself, statistics gathered while the backlog was all
    # in the future (a bulk of scheduled jobs, then fresh due ones) say no row is due, and the
    # planner scans and sorts the whole table at every claim (measured: 230 ms instead of 6 ms
    # with 1 000 000 jobs scheduled ahead).
    return (Job.queue == queue, *waiting(), Job.run_at <= select(db_now()).scalar_subquery())


CLAIM_LIMIT = "claim_limit"
"""The bind parameter of a claim's overall limit; each queue's is ``claim_limit_<index>``."""


def claim_limit_values(
    queues: Sequence[str], limit: int, limits: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Return the values of a claim's limit parameters: `limit` in all, and per queue its entry
    of `limits` (none: `limit`), never more than `limit`.

    The claim's SQL holds them as bind parameters, so one statement per list of queues serves
    every combination of free slots, and a prepared statement is reused.
    """
    values = {CLAIM_LIMIT: limit}
    for index, queue in enumerate(queues):
        wanted = limit if limits is None else limits.get(queue, 0)
        values[f"{CLAIM_LIMIT}_{index}"] = max(0, min(limit, wanted))
    return values


def claim_limit_parameters(
    queues: Sequence[str], limit: int, limits: Mapping[str, int] | None = None
) -> tuple[BindParameter[int], list[BindParameter[int]]]:
    """Return the bind parameters of a claim's limits (overall, per queue), holding the values
    of `claim_limit_values` (which the store passes anew at each execution)."""
    values = claim_limit_values(queues, limit, limits)
    per_queue = [
        bindparam(f"{CLAIM_LIMIT}_{index}", values[f"{CLAIM_LIMIT}_{index}"], type_=Integer())
        for index in range(len(queues))
    ]
    return bindparam(CLAIM_LIMIT, limit, type_=Integer()), per_queue


def best_claimable(
    queues: Sequence[str], limits: Sequence[int | ColumnElement[int]]
) -> list[Select[uuid.UUID, int, datetime]]:
    """Select, per queue, (id, priority, run_at) of its best `limits[i]` claimable jobs, best
    first.

    One select per queue, each reading ix_sqla_jobs_job_waiting_claim in order from the
    queue's highest priority and stopping after its limit: a `queue IN (...)` scan could not
    read one index in order, and would sort every due job of every queue. The entries it walks
    past are future jobs of a higher priority than the due ones, if any (index entries only, no
    table rows). A queue whose limit is 0 reads nothing.
    """
    return [
        select(Job.id, Job.priority, Job.run_at)
        .where(*claimable(queue))
        .order_by(*CLAIM_ORDER)
        .limit(queue_limit)
        for queue, queue_limit in zip(queues, limits, strict=True)
    ]


def claim_candidates(
    per_queue: Sequence[Select[*tuple[Any, ...]]], limit: int | ColumnElement[int], key: str = "id"
) -> Select[Any]:
    """Select column `key` of the best `limit` among the per-queue selects' rows, best first.

    The sort it needs is of those rows only: at most each queue's limit.
    """
    # Each arm as a subquery: a LIMITed (and, on PostgreSQL, locking) select cannot stand as a
    # term of UNION ALL itself.
    arms = [select(*arm.subquery().c) for arm in per_queue]
    candidates = union_all(*arms).subquery("candidates")
    return (
        select(candidates.c[key])
        .order_by(candidates.c.priority.desc(), candidates.c.run_at, candidates.c.id)
        .limit(limit)
    )


def has_queue_limit(queue: str) -> ColumnElement[bool]:
    """Return whether `queue` has a row in sqla_jobs_queue_limit (one primary-key probe)."""
    return exists().where(QueueLimit.queue == queue)


def running_count(queue: str) -> ScalarSelect[int]:
    """Return the number of jobs of `queue` that a worker holds (read through the small
    ix_sqla_jobs_job_locked_by, which holds running jobs only)."""
    running = Job.__table__.alias("running")
    return (
        select(func.count())
        .select_from(running)
        .where(running.c.queue == queue, running.c.locked_by.is_not(None))
        .correlate(None)
        .scalar_subquery()
    )
