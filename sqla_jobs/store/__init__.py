"""The store: every database call a worker makes, and nothing else.

`JobStore` runs the statements `dialects` builds, on the worker's engine, in short transactions
(one statement each where it can: then in autocommit, one round trip). The worker, its recorder,
its lease and its maintenance ask the store; none of them opens a connection itself. The lease's
own connection (`store.lease`) and the LISTEN connection (`store.listener`) live here too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import Delete, Update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sqla_jobs.dialects import JobStatements, statements_for
from sqla_jobs.dialects.slots import SlotStatements
from sqla_jobs.execution import DeadLetter, Retry, Snoozed
from sqla_jobs.store.claims import LIMITS_REFRESH_INTERVAL, ClaimStore
from sqla_jobs.store.driver import DriverStatement
from sqla_jobs.store.engines import create_job_sync_engine as create_job_sync_engine
from sqla_jobs.store.engines import create_worker_engine as create_worker_engine
from sqla_jobs.store.engines import pool_options as pool_options
from sqla_jobs.store.minute_counts import MinuteCountStore
from sqla_jobs.store.pinned import PinnedConnection
from sqla_jobs.store.slots import PeriodicSlotStore


@dataclass(frozen=True, slots=True)
class LostJob:
    """A job locked by a worker that no longer holds a lease (dead, or never registered)."""

    id: uuid.UUID
    name: str
    error_count: int
    locked_by: str
    cancel_reason: str | None
    queue: str
    run_at: datetime


class JobStore(ClaimStore, PeriodicSlotStore, MinuteCountStore):
    """Run the worker's statements on `engine`.

    >>> store = JobStore(create_worker_engine("postgresql://app@db/app", concurrency=10))
    >>> jobs = await store.claim(worker_id="w1", queues=["default"], limit=10)
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.statements: JobStatements = statements_for(engine.dialect.name)
        self.slots = SlotStatements(engine.dialect.name)
        # One statement is atomic on its own: without BEGIN/COMMIT around it, it costs one
        # round trip instead of three.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_committed = engine.execution_options(isolation_level="READ COMMITTED")
        # The worker's two busiest serial callers, each on a connection of its own while the
        # worker runs (`pin_connections`): the claim loop (claims, next-due) and the recorder.
        self._claim_connection = PinnedConnection(self._autocommit)
        self._delete_connection = PinnedConnection(self._autocommit)
        # Building a statement costs more than running it: build each shape once.
        self._claims: dict[tuple[str, tuple[str, ...]], DriverStatement] = {}
        self._limited_claims: dict[tuple[str, str], Update] = {}
        self._limited: frozenset[str] = frozenset()
        self._limited_read_at: float | None = None
        self._limited_refresh: asyncio.Task[None] | None = None
        self._deletes: dict[str, Delete] = {}
        self._next_due: dict[tuple[str, ...], Any] = {}

    @property
    def dialect(self) -> str:
        """The database's SQLAlchemy dialect name (``postgresql``, ``sqlite``)."""
        return self.engine.dialect.name

    async def delete_jobs(self, *, worker_id: str, job_ids: Sequence[uuid.UUID]) -> int:
        """Delete the succeeded jobs `worker_id` still holds; return how many it held."""
        statement = self._deletes.get(worker_id)
        if statement is None:
            statement = self._deletes[worker_id] = self.statements.delete_batch(worker_id=worker_id)
        async with self._delete_connection.connect() as connection:
            result = await connection.execute(statement, {"job_ids": list(job_ids)})
        return result.rowcount

    def delete_job_statement(self, *, worker_id: str, job_id: uuid.UUID) -> Delete:
        """Return the guarded delete that `ctx.transaction()` runs in the job's own transaction."""
        return self.statements.delete_jobs(worker_id=worker_id, job_ids=[job_id])

    async def write_failure(
        self, *, owner: str, job_id: uuid.UUID, outcome: Retry | Snoozed | DeadLetter
    ) -> bool:
        """Write an unsuccessful run of the job `owner` holds: reschedule it (a retry or a
        snooze) or dead-letter it.

        Returns False, having changed nothing, if `owner` no longer holds the job.
        """
        async with self.engine.begin() as connection:
            match outcome:
                case Retry(error=error, delay=delay):
                    retry = self.statements.retry_job(
                        worker_id=owner, job_id=job_id, error=error, delay=delay
                    )
                    return (await connection.execute(retry)).rowcount == 1
                case Snoozed(delay=delay):
                    snooze = self.statements.snooze_job(worker_id=owner, job_id=job_id, delay=delay)
                    return (await connection.execute(snooze)).rowcount == 1
                case DeadLetter(error=error):
                    return await self._dead_letter(connection, owner, job_id, error)
                case _:
                    assert_never(outcome)

    async def dead_letter_unowned(self, *, job_id: uuid.UUID, error: str) -> bool:
        """Move a job no worker holds to the dead-letter table; False if it is held (or gone)."""
        async with self.engine.begin() as connection:
            return await self._dead_letter(connection, None, job_id, error)

    async def _dead_letter(
        self, connection: AsyncConnection, owner: str | None, job_id: uuid.UUID, error: str
    ) -> bool:
        copy, remove = self.statements.dead_letter_job(worker_id=owner, job_id=job_id, error=error)
        # The copy locks the row it copies: the delete removes exactly what was copied, or, when
        # the copy found nothing, nothing.
        await connection.execute(copy)
        return (await connection.execute(remove)).rowcount == 1

    async def release(self, *, worker_id: str, keep: Sequence[uuid.UUID] = ()) -> int:
        """Unlock `worker_id`'s jobs but `keep`, waking other workers for them; return the count."""
        release = self.statements.release_locks(worker_id=worker_id, keep=list(keep))
        wake_others = self.statements.wake_workers_for_held_jobs(worker_id=worker_id)
        async with self.engine.begin() as connection:
            if wake_others is not None:
                await connection.execute(wake_others)
            return (await connection.execute(release)).rowcount

    async def release_jobs(self, *, worker_id: str, job_ids: Sequence[uuid.UUID]) -> int:
        """Unlock the jobs `worker_id` holds among `job_ids`; return how many it held."""
        statement = self.statements.release_jobs(worker_id=worker_id, job_ids=list(job_ids))
        async with self._autocommit.connect() as connection:
            return (await connection.execute(statement)).rowcount

    async def held_jobs(self, *, worker_id: str) -> set[uuid.UUID]:
        """Return the ids of the jobs `worker_id` holds."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(self.statements.held_jobs(worker_id=worker_id))
            return set(rows.scalars())

    async def cancel_requests(self, *, worker_id: str) -> list[tuple[uuid.UUID, str]]:
        """Return (id, reason) of the jobs `worker_id` holds that were asked to stop."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(self.statements.cancel_requests(worker_id=worker_id))
            return [(job_id, reason or "") for job_id, reason in rows]

    async def unowned_cancelled_jobs(self, *, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Return (id, reason) of cancelled jobs that no worker holds."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(self.statements.cancelled_queued_jobs(limit=limit))
            return [(job_id, reason or "") for job_id, reason in rows]

    async def declare_dead_workers(self, *, heartbeat_timeout: timedelta) -> list[str]:
        """End the leases of workers silent for `heartbeat_timeout`; return their ids."""
        statement = self.statements.declare_dead_workers(heartbeat_timeout=heartbeat_timeout)
        async with self.engine.begin() as connection:
            return list((await connection.execute(statement)).scalars())

    async def lost_jobs(self, *, grace: timedelta, limit: int) -> list[LostJob]:
        """Return jobs locked by worker ids that hold no lease, locked more than `grace` ago."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(self.statements.lost_jobs(grace=grace, limit=limit))
            return [LostJob(*row) for row in rows]

    async def next_due(self, *, queues: Sequence[str]) -> timedelta | None:
        """Return how long until the next job of `queues` is due (None: none is scheduled)."""
        key = tuple(queues)
        statement = self._next_due.get(key)
        if statement is None:
            statement = self._next_due[key] = self.statements.next_due(queues=queues)
        async with self._claim_connection.connect() as connection:
            earliest, now = (await connection.execute(statement)).one()
        return None if earliest is None else earliest - now

    async def refresh_statistics(self) -> bool:
        """ANALYZE the job table if it outgrew the planner's statistics; True if it did."""
        stale = self.statements.stale_statistics()
        if stale is None:
            return False
        async with self.engine.begin() as connection:
            if not await connection.scalar(stale):
                return False
            await connection.execute(self.statements.analyze_jobs())
            return True

    def pin_connections(self) -> None:
        """Keep a connection each for the claims and the deletes until `unpin_connections`
        (what a running worker does: a checkout per statement costs as much as a short claim).
        """
        self._claim_connection.pin()
        self._delete_connection.pin()

    async def unpin_connections(self) -> None:
        """Return the connections `pin_connections` kept to the engine's pool."""
        await asyncio.gather(self._claim_connection.unpin(), self._delete_connection.unpin())

    async def close(self) -> None:
        """Let a refresh of the limited queues end, and return every connection this store
        holds to the engine's pool (the engine itself stays usable)."""
        refresh = self._limited_refresh
        if refresh is not None:
            # A short read: let it end, rather than cancel it in the middle of a statement.
            await asyncio.wait([refresh], timeout=LIMITS_REFRESH_INTERVAL.total_seconds() * 5)
            refresh.cancel()
            await asyncio.wait([refresh])
        await self.unpin_connections()

    async def dispose(self) -> None:
        """Close this store (`close`), then the engine's connections."""
        await self.close()
        await self.engine.dispose()
