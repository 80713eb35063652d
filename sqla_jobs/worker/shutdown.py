"""Shutdown: stop claiming, let running jobs finish, and never hand over a job whose code runs.

The order matters. Jobs get `shutdown_timeout` to finish; then async jobs are cancelled (and
their locks released, so another worker runs them again). A job whose code still runs after
that (a plain ``def run`` thread, which cannot be stopped, or an async job that ignores
cancellation) keeps its lock and the worker keeps its lease while it waits for it; its outcome
is recorded as usual when it ends. Unless the stop is forced: then the worker exits with that
job still locked under a lease that falls silent, and the job is rescued after
`heartbeat_timeout`, as a failed attempt. Succeeded jobs are deleted before any lock is
released (a released success would run again), and the registration is removed only once every
lock is released.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

from loguru import logger

from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import GaveUp, retry_database
from sqla_jobs.worker.lease import Lease
from sqla_jobs.worker.minute_counts import write_minute_counts
from sqla_jobs.worker.recorder import OutcomeRecorder
from sqla_jobs.worker.runner import JobRunner

WRITE_ATTEMPTS = 6
# Cancelled jobs end at once; jobs writing their outcome get this long to commit it.
CANCELLED_GRACE = timedelta(seconds=5)
WAITING_LOG_INTERVAL = 10.0


class Shutdown:
    """Stop a worker's parts in order; `is_clean` tells whether nothing was left behind."""

    def __init__(
        self,
        store: JobStore,
        *,
        runner: JobRunner,
        recorder: OutcomeRecorder,
        lease: Lease,
        shutdown_timeout: timedelta,
    ) -> None:
        self._store = store
        self._runner = runner
        self._recorder = recorder
        self._lease = lease
        self._shutdown_timeout = shutdown_timeout
        self.is_clean = True
        """False once a job had to be left locked, or a lock could not be released."""
        self._unregister = False

    async def stop_jobs(self) -> None:
        """Let running jobs finish, cancel the rest, and wait for code that cannot be stopped."""
        runner = self._runner
        runner.stop_starting()
        if runner.is_busy and not runner.forced.is_set():
            logger.info("waiting for running jobs", count=len(runner.code_running_ids()))
            await self._wait(self._shutdown_timeout)
        runner.cancel_async_jobs()
        await self._wait(CANCELLED_GRACE)
        while runner.code_running_ids() and not runner.forced.is_set():
            logger.warning(
                "waiting for jobs whose code cannot be stopped; their locks are kept",
                count=len(runner.code_running_ids()),
                jobs=[str(job_id) for job_id in runner.code_running_ids()],
            )
            await self._wait(timedelta(seconds=WAITING_LOG_INTERVAL))

    async def let_go(self) -> None:
        """Write the outcomes left, then release the locks of jobs that ended; `end_lease`
        comes next."""
        await self._runner.wait_for_slots(CANCELLED_GRACE.total_seconds())
        await self._recorder.flush(attempts=WRITE_ATTEMPTS)
        still_running = self._runner.code_running_ids()
        # The counts and the release touch different tables: one round trip's wait, not two.
        released, _ = await asyncio.gather(
            self._release(keep=still_running), write_minute_counts(self._store, self._runner.tally)
        )
        if still_running:
            self.is_clean = False
            logger.error(
                "jobs still running at exit keep their locks; they are rescued after the "
                "heartbeat timeout",
                jobs=[str(job_id) for job_id in still_running],
            )
        self._unregister = released and not still_running and not self._recorder.has_pending

    async def end_lease(self) -> None:
        """Stop the lease; unregister it only if `let_go` left no lock and no outcome behind.

        Its thread has a connection of its own: this may run beside disposing of the engine.
        """
        await self._lease.stop(unregister=self._unregister)

    async def _release(self, *, keep: Sequence[uuid.UUID]) -> bool:
        holder = self._lease.holder
        try:
            count = await retry_database(
                lambda: self._store.release(worker_id=holder, keep=keep),
                what="releasing locks failed",
                attempts=WRITE_ATTEMPTS,
            )
        except GaveUp as exc:
            self.is_clean = False
            logger.opt(exception=exc.__cause__).error(
                "locks not released; the jobs are rescued after the heartbeat timeout"
            )
            return False
        if count:
            logger.info("locks released", count=count)
        return True

    async def _wait(self, limit: timedelta) -> None:
        """Wait up to `limit` for every job's code to return, or for a forced stop."""
        tasks = [run.task for run in self._runner.code_running() if run.task is not None]
        if not tasks:
            return
        forced = asyncio.ensure_future(self._runner.forced.wait())
        everything = asyncio.ensure_future(asyncio.wait(tasks))
        try:
            await asyncio.wait(
                [everything, forced],
                timeout=limit.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            everything.cancel()
            forced.cancel()
