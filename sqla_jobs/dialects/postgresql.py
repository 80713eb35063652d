"""PostgreSQL statements: the claim takes row locks with FOR UPDATE SKIP LOCKED."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, Update, func, select, update

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job

from ._shared import CLAIM_ORDER, CLAIMED_COLUMNS, SharedStatements, claimable

CHANNEL = "sqla_jobs"
"""The NOTIFY channel of new jobs; each notification's payload is a queue name."""
CANCEL_CHANNEL = "sqla_jobs_cancel"
"""The NOTIFY channel of cancellations of running jobs; payload ``<job id>:<reason>``."""


class PostgreSQLStatements(SharedStatements):
    """Statements for PostgreSQL, where many workers on many hosts share one queue."""

    def claim_jobs(
        self, *, worker_id: str, queues: Sequence[str], limit: int, lock_timeout: timedelta
    ) -> Update:
        """Lock up to `limit` due jobs for `worker_id`, best first, and return them.

        SKIP LOCKED lets concurrent claimers pass over each other's rows instead of queueing
        behind them; a lock older than `lock_timeout` counts as abandoned.
        """
        due = (
            select(Job.id)
            .where(*claimable(queues, lock_timeout))
            .order_by(*CLAIM_ORDER)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("due")
            # Materialised so the planner cannot re-run the LIMITed lock per outer row.
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        return (
            update(Job)
            .where(Job.id.in_(select(due.c.id)))
            .values(locked_by=worker_id, locked_at=db_now())
            .returning(*CLAIMED_COLUMNS)
        )

    def wake_workers_for_held_jobs(self, *, worker_id: str) -> Select[Any]:
        """Select one NOTIFY per queue of the jobs `worker_id` holds (sent at commit)."""
        queues = select(Job.queue).where(Job.locked_by == worker_id).distinct().subquery()
        return select(func.pg_notify(CHANNEL, queues.c.queue))
