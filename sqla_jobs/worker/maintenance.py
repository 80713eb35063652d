"""Maintenance a worker does at each heartbeat on its own event loop: cancellations, its own locks,
cancelled jobs nobody runs, the planner's statistics, the rescue of dead workers' jobs, and, once
a minute, the per-minute job counts (with the summary log line of the same counts).

Each duty runs on its own: one that fails (or finds a row it cannot handle) is logged and the
others still run; the next round tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from loguru import logger

from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import DATABASE_ERRORS, summarize_error
from sqla_jobs.worker.lease import Lease
from sqla_jobs.worker.minute_counts import prune_minute_counts, write_minute_counts
from sqla_jobs.worker.recorder import OutcomeRecorder
from sqla_jobs.worker.rescuer import Rescuer
from sqla_jobs.worker.runner import JobRunner

CANCEL_BATCH = 100
# Successes are logged per job at DEBUG only; INFO gets one line of counts this often, and the
# per-minute counts table gets the same counts.
SUMMARY_INTERVAL = timedelta(seconds=60)


class Maintenance:
    """Run the worker's periodic duties every `interval` until stopped."""

    def __init__(
        self,
        store: JobStore,
        *,
        lease: Lease,
        runner: JobRunner,
        recorder: OutcomeRecorder,
        rescuer: Rescuer,
        claim_lock: asyncio.Lock,
        interval: timedelta,
    ) -> None:
        self._store = store
        self._lease = lease
        self._runner = runner
        self._recorder = recorder
        self._rescuer = rescuer
        self._claim_lock = claim_lock
        self._interval = interval
        self.released_strays = 0
        """Jobs found locked by this worker that it was not running, released since it started."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Run every duty each `interval` until `stopping` is set.

        The first round leaves out the duties about the worker's own jobs: a worker that has
        just started runs none and holds none (its shutdown released what it held, or left it
        to be rescued), and the reconciliation would hold up its first claims meanwhile. They
        run from the next round on.
        """
        own_jobs = False
        while not stopping.is_set():
            await self.run_once(stopping, own_jobs=own_jobs)
            own_jobs = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._interval.total_seconds())

    async def run_once(
        self, stopping: asyncio.Event | None = None, *, own_jobs: bool = True
    ) -> None:
        """Run every duty once (`own_jobs`: those about the jobs this worker holds too); stop
        between two duties once `stopping` is set, so a shutdown never waits for a round."""
        duties: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("rescuing jobs", self._rescuer.rescue),
            ("dead-lettering cancelled jobs", self.dead_letter_cancelled),
            ("refreshing statistics", self.refresh_statistics),
            ("summarising", self.summarise),
        ]
        if own_jobs:
            duties[:0] = [
                ("passing on cancel requests", self.pass_on_cancel_requests),
                ("reconciling held jobs", self.reconcile),
            ]
        for what, duty in duties:
            if stopping is not None and stopping.is_set():
                return
            try:
                await duty()
            except DATABASE_ERRORS as exc:
                logger.warning(f"{what} failed", error=summarize_error(str(exc)))
            except Exception as exc:
                logger.opt(exception=exc).error(f"{what} crashed")

    async def pass_on_cancel_requests(self) -> None:
        """Cancel this worker's jobs asked to stop (the NOTIFY may have been missed, or absent)."""
        if not self._lease.is_fresh():
            return
        for job_id, reason in await self._store.cancel_requests(worker_id=self._lease.holder):
            self._runner.cancel(job_id, reason)

    async def reconcile(self) -> None:
        """Release jobs locked under this worker's lease that it neither runs nor records.

        A claim whose reply was lost, or an outcome that could not be written, leaves such
        rows; without this they would wait for the worker's death to be rescued.
        """
        if not self._lease.is_fresh():
            return
        # No claim is in flight meanwhile: its rows would look like strays.
        async with self._claim_lock:
            holder = self._lease.holder
            held = await self._store.held_jobs(worker_id=holder)
            strays = held - self._runner.held_ids(holder) - self._recorder.pending_ids()
            if strays:
                released = await self._store.release_jobs(worker_id=holder, job_ids=list(strays))
                # A job may end between the two reads (its row deleted or retried meanwhile).
                if released:
                    self.released_strays += released
                    logger.warning(
                        "released jobs this worker held but was not running", count=released
                    )

    async def dead_letter_cancelled(self) -> None:
        """Move cancelled jobs that no worker runs to the dead-letter table, one at a time."""
        for job_id, reason in await self._store.unowned_cancelled_jobs(limit=CANCEL_BATCH):
            try:
                moved = await self._store.dead_letter_unowned(
                    job_id=job_id, error=f"cancelled: {reason}"
                )
            except DATABASE_ERRORS as exc:
                logger.error(
                    "dead-lettering a cancelled job failed",
                    job_id=str(job_id),
                    error=summarize_error(str(exc)),
                )
                continue
            if moved:
                logger.warning("cancelled job dead-lettered", job_id=str(job_id))

    async def summarise(self) -> None:
        """At most every `SUMMARY_INTERVAL`, write how many jobs ended each way since the last
        time to the per-minute counts, log the totals, and delete counts past their retention."""
        if time.monotonic() - self._runner.tally.taken_at < SUMMARY_INTERVAL.total_seconds():
            return
        await write_minute_counts(self._store, self._runner.tally)
        await prune_minute_counts(self._store)

    async def refresh_statistics(self) -> None:
        """ANALYZE the job table when it outgrew the planner's statistics (after a bulk load)."""
        if await self._store.refresh_statistics():
            logger.info("job table statistics refreshed")
