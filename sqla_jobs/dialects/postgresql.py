"""PostgreSQL statements: the claim takes row locks with FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Delete,
    Select,
    Update,
    Uuid,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    false,
    func,
    literal,
    select,
    table,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, REGCLASS
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job

from .claim import (
    CLAIMED_COLUMNS,
    best_claimable,
    claim_candidates,
    claim_limit_parameters,
    has_queue_limit,
)
from .portable import PortableStatements

ctid: ColumnClause[Any] = column("ctid")
"""A row version's physical address (PostgreSQL's system column; SQLAlchemy has no construct)."""
CHANNEL = "sqla_jobs"
"""The NOTIFY channel of new jobs; each notification's payload is a queue name."""
CANCEL_CHANNEL = "sqla_jobs_cancel"
"""The NOTIFY channel of cancellations of running jobs; payload ``<job id>:<reason>``."""


# Right after a bulk load into a table last analyzed when (nearly) empty, the planner has no
# column statistics: it expects a handful of due jobs and sorts the whole backlog at every claim
# (40 ms instead of 1 ms for 100 000 jobs) until autovacuum's next ANALYZE, up to a minute away.
_STATS = table("pg_stat_user_tables", column("relid"), column("n_live_tup"), schema="pg_catalog")
_CLASS = table("pg_class", column("oid"), column("reltuples"), schema="pg_catalog")
STALE_FACTOR = 10
STALE_MINIMUM_ROWS = 10_000
ANALYZE_LOCK = 0x73716C615F6A6F62
"""An advisory lock key ("sqla_job"), so that one worker at a time refreshes the statistics."""


def commit_without_waiting_for_disk() -> ColumnElement[bool]:
    """Return a condition, always true, that makes its transaction commit asynchronously
    (``SET LOCAL synchronous_commit = off``, as a function inside the statement itself).

    The claim's commit then returns before its WAL reaches the disk, which saved a flush of
    1.5-2.5 ms per claim on the development machine: most of the time from a job's NOTIFY
    to its start. Only a crash of the database server itself (or a failover to a standby)
    can lose such a commit, and losing a claim costs what a dead worker costs, a job that
    runs again: its guarded writes (completion, retry, `ctx.transaction()`) then find it
    unclaimed and change nothing, and any of them that did commit flushed the claim's WAL
    before its own. Other transactions see the claim at once either way. Only this
    transaction is affected (LOCAL): the job's own transactions keep the server's setting.
    """
    setting = select(func.set_config("synchronous_commit", "off", true())).scalar_subquery()
    return setting.is_not(None)


class PostgreSQLStatements(PortableStatements):
    """Statements for PostgreSQL, where many workers on many hosts share one queue."""

    enforces_queue_limits_in_claim = False
    """A limited queue is claimed apart (`claim_limited_jobs`), under its limit row's lock."""

    def claim_jobs(
        self,
        *,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        limits: Mapping[str, int] | None = None,
    ) -> Update:
        """Lock up to `limit` due jobs for `worker_id`, best first (`CLAIM_ORDER`), and return them;
        at most `limits[queue]` of a queue (without `limits`: up to `limit` of any).

        SKIP LOCKED lets concurrent claimers pass over each other's rows instead of queueing
        behind them. Each queue's best are read from the claim index in order; with several
        queues, the best `limit` of those are claimed. The others are locked only until this
        statement commits (the worker claims in autocommit), and stay unclaimed. The SQL is the
        same for the same number of queues: queues and limits are parameters.

        A queue with a cluster-wide limit (a sqla_jobs_queue_limit row) is left out, whatever
        the caller believes: its jobs are claimed by `claim_limited_jobs` only, so no claim
        that skips the limit's lock can take them.
        """
        return self._claim(worker_id, queues, limit, limits, skip_limited=True)

    def claim_limited_jobs(self, *, worker_id: str, queue: str, limit: int) -> Update:
        """Lock up to `limit` due jobs of `queue` for `worker_id`, best first, and return them.

        Run it in a READ COMMITTED transaction that took `lock_queue_limit(queue)` and then, in a
        statement of its own, counted `running_jobs(queue)`; `limit` is at most the limit's
        `max_running` minus that count. That is race-free: every claim of a limited queue holds
        the limit row's lock from before its count until its commit, so claims of the queue run
        one after the other, and the count, a statement that starts once the lock is held, sees
        every claim committed before (READ COMMITTED takes a snapshot per statement). Jobs end
        without the lock, which only lowers the count.
        """
        return self._claim(worker_id, [queue], limit, None, skip_limited=False)

    def _claim(
        self,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        limits: Mapping[str, int] | None,
        *,
        skip_limited: bool,
    ) -> Update:
        overall, per_queue_limits = claim_limit_parameters(queues, limit, limits)
        per_queue = [
            arm.with_for_update(skip_locked=True)
            for arm in best_claimable(queues, per_queue_limits)
        ]
        if skip_limited:
            # Uncorrelated: evaluated once per arm (an InitPlan), one primary-key probe each.
            per_queue = [
                arm.where(~has_queue_limit(queue))
                for arm, queue in zip(per_queue, queues, strict=True)
            ]
        # The locked rows are found again by their physical address (ctid), not their id:
        # no primary-key probe per row (measured: a 100-job claim 10-20% quicker). The address
        # is the version this statement locked, and no one else can update it meanwhile. Had
        # that version been updated by a transaction newer than this statement's snapshot
        # (a cancel, say), the UPDATE does not see it and leaves the job unclaimed, to be
        # looked at again, rather than claiming a row it did not re-check.
        if len(per_queue) == 1:
            [arm] = per_queue
            due = arm.with_only_columns(ctid)
        else:
            due = claim_candidates([arm.add_columns(ctid) for arm in per_queue], overall, "ctid")
        # Materialised so the planner cannot re-run the LIMITed lock per outer row.
        chosen = due.cte("due").prefix_with("MATERIALIZED", dialect="postgresql")
        # `= ANY(ARRAY(SELECT ...))`, not `IN (SELECT ...)`: the planner joins an IN subquery
        # by hashing it against a scan of the whole table whenever that looks cheaper than
        # 100 probes, which it does below some 30 000 rows, dead ones not counted (measured:
        # 2.7 ms instead of 1.5 ms a claim on 10 000 jobs). An array is probed at any size.
        return (
            update(Job)
            .where(
                ctid == any_(func.array(select(chosen.c.ctid).scalar_subquery())),
                commit_without_waiting_for_disk(),
            )
            .values(locked_by=worker_id, locked_at=db_now())
            .returning(*CLAIMED_COLUMNS)
        )

    def delete_batch(self, *, worker_id: str) -> Delete:
        """Delete the jobs `worker_id` still holds among the list of ids bound to ``job_ids``,
        sent as one array: the SQL is the same for every batch size.

        An expanding IN renders a placeholder per id, so each batch size was a statement of its
        own, prepared by asyncpg in an extra round trip and crowding its statement cache.
        """
        job_ids = bindparam("job_ids", type_=ARRAY(Uuid()))
        return delete(Job).where(Job.id == any_(job_ids), Job.locked_by == worker_id)

    def stale_statistics(self) -> Select[bool]:
        """Select whether the job table has 10 times the rows the planner believes (and 10 000
        or more), taking the advisory lock that lets this transaction refresh them."""
        jobs = cast(literal(Job.__tablename__), REGCLASS)
        grown = _STATS.c.n_live_tup > func.greatest(
            _CLASS.c.reltuples * STALE_FACTOR, STALE_MINIMUM_ROWS
        )
        return (
            select(case((grown, func.pg_try_advisory_xact_lock(ANALYZE_LOCK)), else_=false()))
            .select_from(_STATS.join(_CLASS, _STATS.c.relid == _CLASS.c.oid))
            .where(_CLASS.c.oid == jobs)
        )

    def wake_workers_for_held_jobs(self, *, worker_id: str) -> Select[Any]:
        """Select one NOTIFY per queue of the jobs `worker_id` holds (sent at commit)."""
        queues = select(Job.queue).where(Job.locked_by == worker_id).distinct().subquery()
        return select(func.pg_notify(CHANNEL, queues.c.queue))
