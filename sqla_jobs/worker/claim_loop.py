"""The claim loop: claim due jobs while slots are free and the lease is fresh; sleep otherwise.

It sleeps until a job is due (the store's next-due), a NOTIFY or an in-process commit wakes it,
a slot frees up, or `poll_interval` passes. It never claims under a lease that is not fresh: a
worker that could not renew for half of `heartbeat_timeout` may be about to be declared dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from loguru import logger

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.store import JobStore
from sqla_jobs.store.retrying import DATABASE_ERRORS, backoff_delay, summarize_error
from sqla_jobs.worker.lease import Lease
from sqla_jobs.worker.runner import JobRunner

# While busy, claim once a quarter of the slots is free (or after this pause), rather than one
# round trip per finished job.
CLAIM_COOLDOWN = timedelta(milliseconds=2)
# How often a worker that may not claim says so.
STALE_LEASE_LOG_INTERVAL = 5.0


class LeaseDiedError(ConfigurationError):
    """The lease thread died: the worker cannot prove it lives, so it stops."""


class ClaimLoop:
    """Keep the runner's slots filled with due jobs of `queues`."""

    def __init__(
        self,
        store: JobStore,
        *,
        runner: JobRunner,
        lease: Lease,
        queues: Sequence[str],
        poll_interval: timedelta,
        stopping: asyncio.Event,
    ) -> None:
        self._store = store
        self._runner = runner
        self._lease = lease
        self._queues = tuple(queues)
        self._poll_interval = poll_interval
        self._stopping = stopping
        self.lock = asyncio.Lock()
        """Held while a claim is in flight (the reconciliation must not see half a claim)."""
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stale_logged_at = 0.0

    def wake(self) -> None:
        """Wake the loop now; callable from any thread (commits can happen anywhere)."""
        if threading.get_ident() == self._loop_thread:
            # NOTIFY callbacks run on the loop itself: skip the self-pipe round (latency).
            self._wakeup.set()
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed in between
                loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self, *, until_idle: bool) -> None:
        """Claim until `stopping` is set (or, `until_idle`, until nothing is due or running).

        Raises `LeaseDiedError` if the lease thread dies.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        failures = 0
        while not self._stopping.is_set():
            self._wakeup.clear()
            if not self._lease.is_fresh():
                await self._wait_for_lease()
                continue
            free = await self._free_slots()
            # At most `concurrency` a claim: while the jobs claimed ahead run, the next claim is
            # already out (the loop awaits its reply), so the database and the jobs overlap.
            wanted = min(free, self._runner.concurrency)
            claimed = 0
            if wanted > 0:
                try:
                    claimed = await self._claim(wanted)
                except DATABASE_ERRORS as exc:
                    failures += 1
                    await self._back_off(exc, failures)
                    continue
                failures = 0
                if claimed == wanted:
                    continue
            # free == 0 with no job running: the recorder is behind, not the queue empty.
            if until_idle and wanted > 0 and claimed == 0 and not self._runner.is_busy:
                return
            await self.sleep(await self._idle_time(wanted, claimed))

    async def sleep(self, delay: timedelta) -> None:
        """Sleep up to `delay`, waking early when a job finishes, arrives, or the worker stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), delay.total_seconds())

    async def _free_slots(self) -> int:
        free = self._runner.claimable
        if 0 < free < max(1, self._runner.concurrency // 4):
            # Busy: let a few more jobs finish so one round trip claims several.
            await asyncio.sleep(CLAIM_COOLDOWN.total_seconds())
            free = self._runner.claimable
        return free

    async def _claim(self, limit: int) -> int:
        async with self.lock:
            owner = self._lease.holder
            jobs = await self._store.claim(
                worker_id=owner,
                queues=self._queues,
                limit=limit,
                # With per-queue slots: each queue's free ones, as they are now.
                limits=self._runner.free_slots_by_queue(),
            )
            for job in jobs:
                self._runner.start(job, owner)
            if self._lease.holder != owner:
                # The lease was lost while the claim was out (its jobs may be rescued already):
                # release them before a slot starts one.
                self._runner.disown(owner)
        logger.debug("claimed jobs", count=len(jobs), limit=limit)
        if jobs and (len(jobs) < limit or not self._runner.claimable):
            # Let the new jobs start before this loop does anything else (latency). After a
            # full claim with room to claim ahead, the next claim is sent first instead: these
            # jobs run while it is out.
            await asyncio.sleep(0)
        return len(jobs)

    async def _idle_time(self, free: int, claimed: int) -> timedelta:
        """Return how long to sleep: until the next job is due, at most `poll_interval`."""
        if free == 0 or claimed == free:
            return self._poll_interval
        try:
            due_in = await self._store.next_due(queues=self._queues)
        except DATABASE_ERRORS:
            return self._poll_interval  # the next claim reports the trouble
        if due_in is None:
            return self._poll_interval
        return max(min(due_in, self._poll_interval), timedelta(milliseconds=1))

    async def _wait_for_lease(self) -> None:
        if self._lease.died is not None or not self._lease.is_alive():
            logger.critical("the lease thread is not running; the worker stops")
            raise LeaseDiedError("the worker's lease thread died; see the log above")
        now = time.monotonic()
        if now - self._stale_logged_at >= STALE_LEASE_LOG_INTERVAL:
            self._stale_logged_at = now
            since = self._lease.seconds_since_renewal()
            if since is None:
                logger.warning("waiting for the worker's registration before claiming")
            else:
                logger.error(
                    "lease not renewed lately; not claiming until it is",
                    seconds_since_renewal=round(since, 1),
                )
        await self.sleep(min(self._poll_interval, timedelta(milliseconds=200)))

    async def _back_off(self, exc: BaseException, failures: int) -> None:
        delay = backoff_delay(failures)
        logger.warning(
            "claim failed",
            error=summarize_error(str(exc)),
            failures=failures,
            retry_in=delay.total_seconds(),
        )
        await self.sleep(delay)
