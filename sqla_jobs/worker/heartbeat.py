"""Heartbeats and rescue: tell the world this worker lives, and free the jobs of dead ones.

The heartbeat runs in a thread of its own, with its own event loop and database connection, so
a job that blocks the worker's event loop (or every thread of its pool) cannot make a live
worker look dead. The same thread measures how late the worker's loop runs a callback (its lag)
and, every beat, rescues the jobs of workers silent for longer than `heartbeat_timeout`. A
rescue is a failed attempt ("worker lost"), so a job that kills its worker ends in the
dead-letter table after its retries instead of killing workers forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

from loguru import logger
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from sqla_jobs.dialects import JobStatements
from sqla_jobs.engine import create_engine
from sqla_jobs.execution import DeadLetter, Retry
from sqla_jobs.worker.completer import DATABASE_ERRORS, dead_letter, write_failure

# Decides what becomes of a lost job: (task name, failures so far, error text) → outcome.
DecideLost = Callable[[str, int, str], Retry | DeadLetter]
RESCUE_BATCH = 100
# A loop that runs a callback this late is blocked: say so, it delays every job.
LAG_WARNING = timedelta(seconds=1)


class Heartbeat:
    """Keep `worker_id` registered and alive, and rescue the jobs of workers that died."""

    def __init__(
        self,
        *,
        url: URL,
        statements: JobStatements,
        worker_id: str,
        queues: Sequence[str],
        interval: timedelta,
        timeout: timedelta,
        decide_lost: DecideLost,
        cancel: Callable[[uuid.UUID, str], None],
    ) -> None:
        self._url = url
        self._statements = statements
        self._worker_id = worker_id
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._timeout = timeout
        self._decide_lost = decide_lost
        self._cancel = cancel
        self._stopping = threading.Event()
        self._registered = threading.Event()
        self._thread: threading.Thread | None = None
        self._watched_loop: asyncio.AbstractEventLoop | None = None
        self._probe_sent: float | None = None
        self.loop_lag = timedelta(0)
        """How late the worker's event loop last ran a callback of the heartbeat's."""
        self.max_loop_lag = timedelta(0)
        """The worst `loop_lag` seen since the worker started."""
        self.rescued = 0
        """Jobs of dead workers this worker has rescued."""

    async def start(self, *, wait: timedelta = timedelta(seconds=5)) -> None:
        """Start beating in a thread; wait up to `wait` for the registration to be written."""
        self._watched_loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._main, name=f"sqla_jobs-heartbeat-{self._worker_id}", daemon=True
        )
        self._thread.start()
        # Not fatal if the database is away: the thread keeps trying, as the claim loop does.
        await asyncio.to_thread(self._registered.wait, wait.total_seconds())

    async def stop(self) -> None:
        """Stop beating and remove this worker's registration (it holds no job any more)."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, max(self._interval, 5.0) + 5.0)
            self._thread = None

    def _main(self) -> None:
        asyncio.run(self._beat_until_stopped())

    async def _beat_until_stopped(self) -> None:
        # NullPool: one short connection per beat, nothing held between beats.
        engine = create_engine(self._url, poolclass=NullPool)
        try:
            while not self._stopping.is_set():
                await self._beat(engine)
                await asyncio.to_thread(self._stopping.wait, self._interval)
            with contextlib.suppress(*DATABASE_ERRORS):
                async with engine.begin() as connection:
                    await connection.execute(
                        self._statements.unregister_worker(worker_id=self._worker_id)
                    )
        finally:
            await engine.dispose()

    async def _beat(self, engine: AsyncEngine) -> None:
        self._measure_lag()
        try:
            async with engine.begin() as connection:
                await self._keep_registered(connection)
                await self._pass_on_cancel_requests(connection)
            rescued = await self._rescue(engine)
            await self._dead_letter_cancelled(engine)
            await self._refresh_statistics(engine)
        except DATABASE_ERRORS as exc:
            logger.warning("heartbeat failed", worker_id=self._worker_id, error=str(exc))
            return
        if rescued:
            self.rescued += rescued
            logger.warning("rescued jobs of dead workers", count=rescued)

    async def _keep_registered(self, connection: AsyncConnection) -> None:
        beat = self._statements.heartbeat(worker_id=self._worker_id)
        if (await connection.execute(beat)).rowcount == 1:
            self._registered.set()
            return
        if self._registered.is_set():
            # Others took us for dead (a long outage, a frozen process) and released our jobs:
            # our own writes to them now fail their locked_by guard, so nothing is doubled.
            logger.warning("registration was removed as dead; registering again")
        register = self._statements.register_worker(
            worker_id=self._worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self._queues,
        )
        with contextlib.suppress(IntegrityError):
            await connection.execute(register)
        self._registered.set()

    async def _pass_on_cancel_requests(self, connection: AsyncConnection) -> None:
        """Cancel this worker's jobs asked to stop (the NOTIFY may have been missed, or absent)."""
        requests = self._statements.cancel_requests(worker_id=self._worker_id)
        for job_id, reason in (await connection.execute(requests)).all():
            self._cancel(job_id, reason or "")

    async def _dead_letter_cancelled(self, engine: AsyncEngine) -> None:
        """Move cancelled jobs that no worker runs to the dead-letter table."""
        async with engine.begin() as connection:
            queued = self._statements.cancelled_queued_jobs(limit=RESCUE_BATCH)
            for job_id, reason in (await connection.execute(queued)).all():
                error = f"cancelled: {reason}"
                if await dead_letter(
                    connection, self._statements, owner=None, job_id=job_id, error=error
                ):
                    logger.warning("cancelled job dead-lettered", job_id=str(job_id))

    async def _refresh_statistics(self, engine: AsyncEngine) -> None:
        """ANALYZE the job table when it outgrew the planner's statistics (after a bulk load)."""
        stale = self._statements.stale_statistics()
        if stale is None:
            return
        async with engine.begin() as connection:
            if await connection.scalar(stale):
                await connection.execute(self._statements.analyze_jobs())
                logger.info("job table statistics refreshed", worker_id=self._worker_id)

    async def _rescue(self, engine: AsyncEngine) -> int:
        """Retry or dead-letter, as one failed attempt, the jobs of workers that fell silent."""
        lost = self._statements.lost_jobs(heartbeat_timeout=self._timeout, limit=RESCUE_BATCH)
        async with engine.begin() as connection:
            rows = (await connection.execute(lost)).all()
            for job_id, name, error_count, dead_worker in rows:
                error = (
                    f"worker lost: {dead_worker} sent no heartbeat for "
                    f"{self._timeout.total_seconds():g} s while running this job"
                )
                # Guarded by the dead worker's id: if it came back and finished the job
                # meanwhile, nothing is written.
                await write_failure(
                    connection,
                    self._statements,
                    owner=dead_worker or "",
                    job_id=job_id,
                    outcome=self._decide_lost(name, error_count, error),
                )
            await connection.execute(
                self._statements.forget_dead_workers(heartbeat_timeout=self._timeout)
            )
        return len(rows)

    def _measure_lag(self) -> None:
        loop = self._watched_loop
        if loop is None or loop.is_closed():
            return
        now = time.monotonic()
        if self._probe_sent is not None:
            # The last probe has not run yet: the loop is at least this late.
            self._record_lag(now - self._probe_sent)
            return
        self._probe_sent = now
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._probe_arrived, now)

    def _probe_arrived(self, sent: float) -> None:
        self._probe_sent = None
        self._record_lag(time.monotonic() - sent)

    def _record_lag(self, seconds: float) -> None:
        self.loop_lag = timedelta(seconds=seconds)
        self.max_loop_lag = max(self.max_loop_lag, self.loop_lag)
        if self.loop_lag >= LAG_WARNING:
            logger.warning(
                "event loop blocked; a job may be running blocking code in an async run()",
                worker_id=self._worker_id,
                lag=round(seconds, 3),
            )
