"""The store's claim: lock due jobs for a worker, within per-queue slots and queue limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy import Update
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_jobs.admin import set_queue_limit
from sqla_jobs.context import ClaimedJob
from sqla_jobs.dialects import CLAIM_LIMIT, JobStatements, claim_limit_values
from sqla_jobs.store.driver import DriverStatement
from sqla_jobs.store.pinned import PinnedConnection
from sqla_jobs.store.retrying import DATABASE_ERRORS

LIMITS_REFRESH_INTERVAL = timedelta(seconds=1)
"""How long a worker trusts its list of which queues have a cluster-wide limit."""


class ClaimStore:
    """Claim jobs; mixed into `JobStore`, whose engine and statements it uses."""

    engine: AsyncEngine
    statements: JobStatements
    _autocommit: AsyncEngine
    _read_committed: AsyncEngine
    _claim_connection: PinnedConnection
    _claims: dict[tuple[str, tuple[str, ...]], DriverStatement]
    _limited_claims: dict[tuple[str, str], Update]
    _limited: frozenset[str]
    _limited_read_at: float | None
    _limited_refresh: asyncio.Task[None] | None

    async def claim(
        self,
        *,
        worker_id: str,
        queues: Sequence[str],
        limit: int,
        limits: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        """Lock up to `limit` due jobs of `queues` for `worker_id`, best first; at most
        `limits[queue]` of a queue if given (its free slots), and never more than a queue's
        cluster-wide limit (`QueueLimit`) lets run.

        Queues without a cluster-wide limit are claimed by one statement in autocommit. On
        PostgreSQL each limited queue is claimed apart, in a short transaction holding its limit
        row's lock (see `claim_limited_jobs`); on SQLite the one statement obeys the limits.
        """
        wanted = claim_limit_values(queues, limit, limits)
        open_queues = [
            queue for index, queue in enumerate(queues) if wanted[f"{CLAIM_LIMIT}_{index}"] > 0
        ]
        if not open_queues:
            return []
        limited: frozenset[str] = frozenset()
        if not self.statements.enforces_queue_limits_in_claim:
            limited = await self._limited_queues(queues)
        free = {queue: wanted[f"{CLAIM_LIMIT}_{queues.index(queue)}"] for queue in open_queues}
        unlimited = [queue for queue in open_queues if queue not in limited]
        jobs: list[ClaimedJob] = []
        if unlimited:
            jobs += await self._claim_unlimited(worker_id, unlimited, limit, free)
        for queue in open_queues:
            if queue in limited and len(jobs) < limit:
                jobs += await self._claim_limited(
                    worker_id, queue, min(free[queue], limit - len(jobs))
                )
        # RETURNING has no order (PostgreSQL and SQLite alike): start them in the claim's order.
        jobs.sort(key=lambda job: (-job.priority, job.run_at, job.id))
        return jobs

    async def _claim_unlimited(
        self, worker_id: str, queues: list[str], limit: int, free: Mapping[str, int]
    ) -> list[ClaimedJob]:
        key = (worker_id, tuple(queues))
        claim = self._claims.get(key)
        if claim is None:
            if len(self._claims) > 4096:
                self._claims.clear()  # a worker whose id changed leaves stale shapes behind
            statement = self.statements.claim_jobs(
                worker_id=worker_id, queues=queues, limit=limit, limits=free
            )
            claim = self._claims[key] = DriverStatement(statement, self.engine.dialect)
        async with self._claim_connection.connect() as connection:
            keys, rows = await claim.fetch(connection, claim_limit_values(queues, limit, free))
        return ClaimedJob.from_rows(keys, rows)

    async def _claim_limited(self, worker_id: str, queue: str, limit: int) -> list[ClaimedJob]:
        # PostgreSQL only: SQLite's claim obeys the limits itself. READ COMMITTED explicitly:
        # the count must see every claim committed before the lock was granted, which a
        # snapshot per statement gives and a snapshot per transaction (REPEATABLE READ) would
        # not.
        async with self._read_committed.begin() as connection:
            max_running = await connection.scalar(self.statements.lock_queue_limit(queue=queue))
            if max_running is None:
                # The limit was removed meanwhile: claim it as any queue from now on.
                self._limited_read_at = None
                claim = self.statements.claim_jobs(worker_id=worker_id, queues=[queue], limit=limit)
            else:
                running = await connection.scalar(self.statements.running_jobs(queue=queue)) or 0
                limit = min(limit, max_running - running)
                if limit <= 0:
                    return []
                claim = self._limited_claim(worker_id, queue)
            result = await connection.execute(claim, claim_limit_values([queue], limit))
            keys, rows = list(result.keys()), result.all()
        return ClaimedJob.from_rows(keys, rows)

    def _limited_claim(self, worker_id: str, queue: str) -> Update:
        statement = self._limited_claims.get((worker_id, queue))
        if statement is None:
            if len(self._limited_claims) > 4096:
                self._limited_claims.clear()
            statement = self.statements.claim_limited_jobs(
                worker_id=worker_id, queue=queue, limit=1
            )
            self._limited_claims[(worker_id, queue)] = statement
        return statement

    async def _limited_queues(self, queues: Sequence[str]) -> frozenset[str]:
        """Return which of `queues` have a cluster-wide limit, as read at most about
        `LIMITS_REFRESH_INTERVAL` ago.

        Only the first read (and one after the list was found wrong) delays a claim: later ones
        run beside the claims, which use the list they have meanwhile (else one claim a second
        waited for an extra round trip). A stale answer is safe: the unlimited claim leaves out
        any queue that has a limit (a new limit's queue is then not claimed until the next
        read), and a limited claim that finds no limit row claims as the unlimited one does.
        """
        read_at = self._limited_read_at
        if read_at is None:
            await self._read_limited_queues(queues)
        elif (
            time.monotonic() - read_at >= LIMITS_REFRESH_INTERVAL.total_seconds()
            and self._limited_refresh is None
        ):
            self._limited_refresh = asyncio.create_task(self._refresh_limited_queues(queues))
        return self._limited

    async def _read_limited_queues(self, queues: Sequence[str]) -> None:
        read_at = time.monotonic()
        async with self._claim_connection.connect() as connection:
            rows = await connection.execute(self.statements.limited_queues(queues=queues))
            self._limited = frozenset(rows.scalars())
        self._limited_read_at = read_at

    async def prepare_claims(self, queues: Sequence[str]) -> None:
        """Open the claims' connection, and read which of `queues` have a cluster-wide limit, so
        that the first claim costs a round trip rather than a connect (a worker runs this
        while its lease registers). A database that is away is the first claim's to report.
        """
        try:
            if self.statements.enforces_queue_limits_in_claim:
                async with self._claim_connection.connect():
                    pass
            else:
                await self._read_limited_queues(queues)
        except DATABASE_ERRORS:
            pass

    async def _refresh_limited_queues(self, queues: Sequence[str]) -> None:
        try:
            await self._read_limited_queues(queues)
        except DATABASE_ERRORS:
            pass  # the list stays as it was; the next claim starts another read
        finally:
            self._limited_refresh = None

    async def set_queue_limits(self, limits: Mapping[str, int]) -> None:
        """Store each queue's cluster-wide limit of running jobs (replacing a previous one)."""
        if not limits:
            return
        async with self.engine.begin() as connection:
            for queue, max_running in limits.items():
                await connection.execute(set_queue_limit(queue, max_running))
        self._limited_read_at = None
