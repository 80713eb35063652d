"""SQLite statements: no row locks; one UPDATE is atomic under SQLite's database write lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Select, Update, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job, QueueLimit

from .claim import (
    CLAIMED_COLUMNS,
    best_claimable,
    claim_candidates,
    claim_limit_parameters,
    running_count,
)
from .portable import PortableStatements


class SQLiteStatements(PortableStatements):
    """Statements for SQLite: the embedded default for laptops, examples and small deployments."""

    enforces_queue_limits_in_claim = True
    """SQLite serialises writers: the claim itself counts and obeys queue limits."""

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

        SQLite serialises writers, so selecting and marking the rows in one UPDATE is enough
        to keep two workers from claiming the same job. Each queue's best are read from the
        claim index in order; with several queues, the best `limit` of those.

        A queue with a cluster-wide limit (a sqla_jobs_queue_limit row) gets at most its
        `max_running` minus the jobs of it that workers hold, counted in this same UPDATE: the
        statement runs under the database's write lock from its first read, so no other claim
        can commit between the count and the claim (race-free without any row lock).
        """
        overall, per_queue_limits = claim_limit_parameters(queues, limit, limits)
        obeyed = [
            _within_queue_limit(queue, queue_limit)
            for queue, queue_limit in zip(queues, per_queue_limits, strict=True)
        ]
        per_queue = best_claimable(queues, obeyed)
        if len(per_queue) == 1:
            [arm] = per_queue
            due = arm.with_only_columns(Job.id)
        else:
            due = claim_candidates(per_queue, overall)
        return (
            update(Job)
            .where(Job.id.in_(due.scalar_subquery()))
            .values(locked_by=worker_id, locked_at=db_now())
            .returning(*CLAIMED_COLUMNS)
        )

    def wake_workers_for_held_jobs(self, *, worker_id: str) -> Select[Any] | None:
        """Return None: this database cannot wake other processes."""
        return None

    def stale_statistics(self) -> Select[bool] | None:
        """Return None: SQLite plans the claim without table statistics."""
        return None

    def claim_limited_jobs(self, *, worker_id: str, queue: str, limit: int) -> Update:
        """Lock up to `limit` due jobs of `queue` for `worker_id`, within its limit: the same
        statement as `claim_jobs`, which counts and obeys the limit itself."""
        return self.claim_jobs(worker_id=worker_id, queues=[queue], limit=limit)


def _within_queue_limit(queue: str, wanted: ColumnElement[int]) -> ColumnElement[int]:
    """Return `wanted`, lowered to the room `queue`'s limit leaves (`max_running` minus its held
    jobs), never below 0 (a negative LIMIT means none at all to SQLite)."""
    room = (
        select(QueueLimit.max_running - running_count(queue))
        .where(QueueLimit.queue == queue)
        .scalar_subquery()
    )
    # No limit row: no room figure, so `wanted` stands; the count runs only for a limited queue.
    return func.max(0, func.min(wanted, func.coalesce(room, wanted)))
