"""SQLite statements: no row locks; one UPDATE is atomic under SQLite's database write lock."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Update, select, update

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job

from ._shared import CLAIM_ORDER, CLAIMED_COLUMNS, SharedStatements, claimable


class SQLiteStatements(SharedStatements):
    """Statements for SQLite: the embedded default for laptops, examples and small deployments."""

    def claim_jobs(self, *, worker_id: str, queues: Sequence[str], limit: int) -> Update:
        """Lock up to `limit` due jobs for `worker_id`, best first, and return them.

        SQLite serialises writers, so selecting and marking the rows in one UPDATE is enough
        to keep two workers from claiming the same job.
        """
        due = select(Job.id).where(*claimable(queues)).order_by(*CLAIM_ORDER).limit(limit)
        return (
            update(Job)
            .where(Job.id.in_(due.scalar_subquery()))
            .values(locked_by=worker_id, locked_at=db_now())
            .returning(*CLAIMED_COLUMNS)
        )
