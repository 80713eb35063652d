"""Dialect-specific SQL: each engine gets a `JobStatements` that builds (never runs) statements.

The builders do no I/O; the worker executes them in its own short transactions. Every write to
a claimed row is guarded by ``locked_by = worker_id``: 0 rows affected means the lock was lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Delete, Executable, Insert, Select, Update
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.elements import BindParameter

from sqla_jobs.errors import ConfigurationError

from .claim import CLAIM_LIMIT as CLAIM_LIMIT
from .claim import claim_limit_values as claim_limit_values


class JobStatements(Protocol):
    """The statements a worker needs, built for one SQL dialect."""

    enforces_queue_limits_in_claim: bool
    """True if `claim_jobs` obeys queue limits itself; else limited queues are claimed with
    `claim_limited_jobs`, under `lock_queue_limit`, after counting `running_jobs`."""

    def claim_jobs(
        self,
        *,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        limits: Mapping[str, int] | None = None,
    ) -> Update:
        """Lock up to `limit` due jobs for `worker_id`, best first, and return them; at most
        `limits[queue]` of a queue (without `limits`: up to `limit` of any).

        Due: waiting (unlocked, not cancelled) with `run_at <= now()`, in `queues`. Best first:
        `priority` descending, then `run_at` (the longest due first), then `id`. The limits
        are bind parameters (`claim_limit_values`): pass new values when executing it again.
        """
        ...

    def claim_limited_jobs(self, *, worker_id: str, queue: str, limit: int) -> Update:
        """Lock up to `limit` due jobs of `queue`, a queue with a cluster-wide limit."""
        ...

    def limited_queues(self, *, queues: Sequence[str]) -> Select[str]:
        """Select those of `queues` that have a cluster-wide limit."""
        ...

    def lock_queue_limit(self, *, queue: str) -> Select[int]:
        """Select `queue`'s `max_running`, locking its row until the transaction ends."""
        ...

    def running_jobs(self, *, queue: str) -> Select[int]:
        """Select how many jobs of `queue` workers hold."""
        ...

    def delete_jobs(
        self, *, worker_id: str, job_ids: Sequence[uuid.UUID] | BindParameter[Any]
    ) -> Delete:
        """Delete the jobs `worker_id` still holds among `job_ids` (they succeeded)."""
        ...

    def delete_batch(self, *, worker_id: str) -> Delete:
        """Delete the jobs `worker_id` still holds among the list of ids bound to ``job_ids``."""
        ...

    def retry_job(
        self, *, worker_id: str, job_id: uuid.UUID, error: str, delay: timedelta
    ) -> Update:
        """Record a failure and unlock the job, due again `delay` from now."""
        ...

    def snooze_job(self, *, worker_id: str, job_id: uuid.UUID, delay: timedelta) -> Update:
        """Unlock the job, due again `delay` from now, counting a snooze (not a failure)."""
        ...

    def dead_letter_job(
        self, *, worker_id: str | None, job_id: uuid.UUID, error: str
    ) -> tuple[Insert, Delete]:
        """Copy the job into the dead-letter table, then delete it (run both in one transaction).

        Guarded by ``locked_by = worker_id``, or, with `worker_id` None, by the job being unlocked.
        """
        ...

    def release_locks(
        self, *, worker_id: str, keep: Sequence[uuid.UUID] | BindParameter[Any] = ()
    ) -> Update:
        """Unlock every job `worker_id` holds but those in `keep`, so any worker can claim them."""
        ...

    def release_jobs(
        self, *, worker_id: str, job_ids: Sequence[uuid.UUID] | BindParameter[Any]
    ) -> Update:
        """Unlock the jobs `worker_id` holds among `job_ids`."""
        ...

    def held_jobs(self, *, worker_id: str) -> Select[uuid.UUID]:
        """Select the ids of the jobs `worker_id` holds."""
        ...

    def register_worker(
        self, *, worker_id: str, hostname: str, pid: int, queues: Sequence[str]
    ) -> Insert:
        """Insert this worker's registration; its heartbeat starts now."""
        ...

    def heartbeat(self, *, worker_id: str) -> Update:
        """Mark `worker_id` alive now (0 rows: its registration was removed as dead)."""
        ...

    def unregister_worker(self, *, worker_id: str) -> Delete:
        """Remove `worker_id`'s registration."""
        ...

    def declare_dead_workers(self, *, heartbeat_timeout: timedelta) -> ReturningDelete[str]:
        """Delete the registrations silent for `heartbeat_timeout`, returning their ids."""
        ...

    def lost_jobs(
        self, *, grace: timedelta, limit: int
    ) -> Select[uuid.UUID, str, int, str, str | None, str, datetime]:
        """Select jobs locked by a worker id that has no registration, locked over `grace` ago.

        Rows: (id, name, error_count, locked_by, cancel_reason).
        """
        ...

    def cancel_requests(self, *, worker_id: str) -> Select[uuid.UUID, str | None]:
        """Select (id, cancel_reason) of the jobs `worker_id` runs that were asked to stop."""
        ...

    def cancelled_queued_jobs(self, *, limit: int) -> Select[uuid.UUID, str | None]:
        """Select (id, cancel_reason) of cancelled jobs that no worker runs."""
        ...

    def next_due(self, *, queues: Sequence[str]) -> Select[datetime, datetime]:
        """Select the earliest future `run_at` of waiting jobs (or NULL) and the database now."""
        ...

    def stale_statistics(self) -> Select[bool] | None:
        """Select whether the planner's picture of the job table is far off, taking the right to
        refresh it (one worker at a time, for this transaction); None where nothing is needed."""
        ...

    def analyze_jobs(self) -> Executable:
        """Refresh the planner's statistics of the job table."""
        ...

    def wake_workers_for_held_jobs(self, *, worker_id: str) -> Select[Any] | None:
        """Select that wakes other workers for the queues of `worker_id`'s jobs, if possible.

        Run it in the transaction that releases the jobs: the wake-up is sent at commit.
        """
        ...


def statements_for(dialect_name: str) -> JobStatements:
    """Return the statement builders for a SQLAlchemy dialect name (``engine.dialect.name``)."""
    if dialect_name == "postgresql":
        from .postgresql import PostgreSQLStatements

        return PostgreSQLStatements()
    if dialect_name == "sqlite":
        from .sqlite import SQLiteStatements

        return SQLiteStatements()
    raise ConfigurationError(f"sqla_jobs supports PostgreSQL and SQLite, not {dialect_name!r}")
