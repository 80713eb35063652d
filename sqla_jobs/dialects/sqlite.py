"""SQLite statements: no row locks; one UPDATE is atomic under SQLite's database write lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, Update, update

from sqla_jobs.clock import db_now
from sqla_jobs.models import Job

from .portable import CLAIMED_COLUMNS, PortableStatements, best_claimable, claim_candidates


class SQLiteStatements(PortableStatements):
    """Statements for SQLite: the embedded default for laptops, examples and small deployments."""

    def claim_jobs(self, *, worker_id: str, queues: Sequence[str], limit: int) -> Update:
        """Lock up to `limit` due jobs for `worker_id`, best first (`CLAIM_ORDER`), and return them.

        SQLite serialises writers, so selecting and marking the rows in one UPDATE is enough
        to keep two workers from claiming the same job. Each queue's best `limit` are read
        from the claim index in order; with several queues, the best `limit` of those.
        """
        per_queue = best_claimable(queues, limit)
        if len(per_queue) == 1:
            [arm] = per_queue
            due = arm.with_only_columns(Job.id)
        else:
            due = claim_candidates(per_queue, limit)
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
